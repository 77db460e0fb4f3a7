package api

import (
	"errors"
	"mime"
	"net/http"
	"strings"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/contacts"
)

// MaxSyncBytes is the body limit of an address-book sync: 10,000 entries
// of a few phones each fit.
const MaxSyncBytes = 4 << 20

// SetContacts adds the address-book and presence endpoints
// (docs/contacts.md). Call it before serving.
func (s *Server) SetContacts(c *contacts.Service) {
	if s.bodyLimits == nil {
		s.bodyLimits = map[string]int64{}
	}
	s.bodyLimits["/v1/contacts/sync"] = MaxSyncBytes
	s.bodyLimits["/v1/contacts/import"] = contacts.MaxVCardBytes

	s.handle("POST /v1/contacts/sync", s.authed(func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		var body struct {
			contacts.SyncRequest
			// Region writes national numbers in another region than the
			// owner's own number's ("GB" for a Chinese user living in the UK).
			Region string `json:"region"`
		}
		if err := DecodeJSON(r, &body); err != nil {
			return err
		}
		region, err := regionParam(body.Region)
		if err != nil {
			return err
		}
		res, err := c.Sync(r.Context(), p.Number, region, body.SyncRequest)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, res)
	}))
	s.handle("POST /v1/contacts/import", s.authed(func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || (mt != "text/vcard" && mt != "text/x-vcard" && mt != "text/directory") {
			return phonebook.Errorf(phonebook.EMediaType, "send the vCard file as text/vcard")
		}
		region, err := regionParam(r.URL.Query().Get("region"))
		if err != nil {
			return err
		}
		res, err := c.ImportVCard(r.Context(), p.Number, region, r.Body)
		if err != nil {
			return jsonErrorOr(err)
		}
		return writeJSON(w, http.StatusOK, res)
	}))
	s.handle("GET /v1/contacts", s.authed(func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		list, err := c.Contacts(r.Context(), p.Number)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]any{"contacts": nonNil(list)})
	}))
	s.handle("GET /v1/contacts/presence", s.authed(func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		list, err := c.ContactsPresence(r.Context(), p.Number)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]any{"presence": nonNil(list)})
	}))
	s.handle("GET /v1/contacts/restore", s.authed(func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		book, err := c.Restore(r.Context(), p.Number)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, map[string]any{"entries": nonNil(book)})
	}))
	s.handle("GET /v1/presence", s.authed(func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		me, err := c.MyPresence(r.Context(), p.Number)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, me)
	}))
	s.handle("PUT /v1/presence", s.authed(func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		var u contacts.PresenceUpdate
		if err := DecodeJSON(r, &u); err != nil {
			return err
		}
		me, err := c.SetPresence(r.Context(), p.Number, u)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, me)
	}))
}

// regionParam accepts "" or an ISO 3166 alpha-2 code.
func regionParam(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	if len(v) != 2 || !isLetter(v[0]) || !isLetter(v[1]) {
		return "", phonebook.Errorf(phonebook.EInvalid, "region must be an ISO 3166 two-letter code such as CN, not %q", v)
	}
	return strings.ToUpper(v), nil
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// jsonErrorOr turns a body over its limit, met while streaming a vCard file,
// into request_too_large.
func jsonErrorOr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return jsonError(err)
	}
	return err
}

func nonNil[T any](xs []T) []T {
	if xs == nil {
		return []T{}
	}
	return xs
}
