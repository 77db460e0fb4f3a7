package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/store"
)

// multipartSlack is what a multipart upload may add to media.max_bytes:
// boundaries, part headers, a file name.
const multipartSlack = 16 << 10

// EnableMedia serves the media endpoints (docs/api.md, "Media") from svc:
// uploads and downloads for sessions, and the public short links an SMS
// carries (/m/{token}).
func (s *Server) EnableMedia(svc *media.Service) {
	s.media = svc
	if s.bodyLimits == nil {
		s.bodyLimits = map[string]int64{}
	}
	s.bodyLimits["/v1/media"] = svc.Config().MaxBytes + multipartSlack
	s.handle("POST /v1/media", s.authed(s.uploadMedia))
	s.handle("GET /v1/media/{id}", s.authed(s.downloadMedia(false)))
	s.handle("GET /v1/media/{id}/thumbnail", s.authed(s.downloadMedia(true)))
	s.handle("GET /m/{token}", s.linkPage)
	s.handle("GET /m/{token}/{n}", s.linkMedia(false))
	s.handle("GET /m/{token}/{n}/thumbnail", s.linkMedia(true))
}

// mediaJSON is the answer to an upload.
type mediaJSON struct {
	ID          string    `json:"id"`
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	Name        string    `json:"name,omitempty"`
	Width       int       `json:"width,omitempty"`
	Height      int       `json:"height,omitempty"`
	Thumbnail   bool      `json:"thumbnail"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// uploadMedia takes the body as it is (any Content-Type but multipart;
// the name from ?name=) or as multipart/form-data with the file in a part
// named "file".
func (s *Server) uploadMedia(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	// A slow phone gets more than the server's read timeout for a body up
	// to media.max_bytes.
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(mediaTransferTime))
	if err := s.media.Admit(r.Context(), p.Number, s.AddrKey(r)); err != nil {
		return err
	}
	max := s.media.Config().MaxBytes
	var body []byte
	name := r.URL.Query().Get("name")
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var err error
	if mt == "multipart/form-data" {
		body, name, err = readMultipartFile(r, params["boundary"], max)
	} else {
		if _, ok := r.Header["Content-Disposition"]; ok && name == "" {
			if _, dp, derr := mime.ParseMediaType(r.Header.Get("Content-Disposition")); derr == nil {
				name = dp["filename"]
			}
		}
		body, err = readUpload(r.Body, max)
	}
	if err != nil {
		return err
	}
	info, err := s.media.UploadAdmitted(r.Context(), p.Number, name, bytes.NewReader(body))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/media/"+info.ID)
	return writeJSON(w, http.StatusCreated, mediaJSON{
		ID: info.ID, ContentType: info.ContentType, Size: info.Size, SHA256: info.SHA256, Name: info.Name,
		Width: info.Width, Height: info.Height, Thumbnail: info.Thumbnail, ExpiresAt: info.Expires.UTC().Truncate(time.Second),
	})
}

// readUpload reads at most max bytes of r; more is request_too_large, a
// body that ends before its Content-Length invalid_request.
func readUpload(r io.Reader, max int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe) || err == nil && int64(len(b)) > max:
		return nil, phonebook.Errorf(phonebook.ETooLarge, "the medium is larger than %d bytes (media.max_bytes)", max)
	case err != nil:
		return nil, phonebook.Errorf(phonebook.EInvalid, "the upload ended early (%v): send it again", err)
	}
	return b, nil
}

// readMultipartFile finds the part named "file" and reads the whole body
// to its closing boundary: a truncated upload is refused, not stored
// half.
func readMultipartFile(r *http.Request, boundary string, max int64) ([]byte, string, error) {
	if boundary == "" {
		return nil, "", phonebook.Errorf(phonebook.EInvalid, "multipart/form-data without a boundary parameter")
	}
	mr := multipart.NewReader(r.Body, boundary)
	var body []byte
	var name string
	found := false
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, "", multipartError(err, max)
		}
		if part.FormName() != "file" || found {
			if _, err := io.Copy(io.Discard, part); err != nil {
				return nil, "", multipartError(err, max)
			}
			continue
		}
		found = true
		name = part.FileName()
		if body, err = readUpload(part, max); err != nil {
			if phonebook.ErrorCode(err) == phonebook.ETooLarge {
				return nil, "", err
			}
			return nil, "", multipartError(err, max)
		}
	}
	if !found {
		return nil, "", phonebook.Errorf(phonebook.EInvalid, `the multipart body has no part named "file"`)
	}
	return body, name, nil
}

func multipartError(err error, max int64) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return phonebook.Errorf(phonebook.ETooLarge, "the medium is larger than %d bytes (media.max_bytes)", max)
	}
	return phonebook.Errorf(phonebook.EInvalid, "the multipart body is malformed or truncated (it must end with its closing boundary): send it again")
}

func (s *Server) downloadMedia(thumbnail bool) AuthHandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
		rs, info, err := s.media.OpenFor(r.Context(), r.PathValue("id"), p.Number, thumbnail)
		if err != nil {
			return err
		}
		defer rs.Close()
		serveMedia(w, r, rs, info, thumbnail, "private")
		return nil
	}
}

// mediaTransferTime is how long one upload or download may take.
const mediaTransferTime = 5 * time.Minute

// serveMedia answers with a body: Range, If-Range and If-None-Match
// (the ETag is the body's SHA-256) through http.ServeContent.
func serveMedia(w http.ResponseWriter, r *http.Request, rs io.ReadSeeker, info media.Info, thumbnail bool, cache string) {
	h := w.Header()
	ct := info.ContentType
	if thumbnail {
		ct = media.ThumbnailType(ct)
	} else {
		h.Set("ETag", `"`+info.SHA256+`"`)
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(mediaTransferTime))
	h.Set("Content-Type", ct)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
	h.Set("Cache-Control", cache+", max-age=86400")
	if name := info.Name; name != "" && !thumbnail {
		h.Set("Content-Disposition", mime.FormatMediaType("inline", map[string]string{"filename": name}))
	}
	http.ServeContent(w, r, "", info.Created, rs)
}

// The public short links (media.Service.Link): /m/{token} is a small page
// for a phone's browser, /m/{token}/{n} the n-th medium. A wrong token
// counts against the address (media.link_failures_per_address_hour).

var linkPage = template.Must(template.New("link").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Phonebook media</title></head><body>
{{if .Error}}<p>{{.Error}}</p>{{else}}<p>Media sent to you with Phonebook (this link works until {{.Until}}):</p>
<ul>{{range .Items}}<li>{{if .Thumb}}<a href="{{.Href}}"><img src="{{.Href}}/thumbnail" alt=""></a><br>{{end}}
<a href="{{.Href}}">{{.Label}}</a> ({{.Type}}, {{.Size}})</li>
{{end}}</ul>{{end}}
</body></html>
`))

type linkItem struct {
	Href, Label, Type, Size string
	Thumb                   bool
}

func (s *Server) linkPage(w http.ResponseWriter, r *http.Request) error {
	tok := r.PathValue("token")
	if err := s.linkGuard(r); err != nil {
		return err
	}
	infos, until, err := s.media.ResolveLink(r.Context(), tok)
	data := struct {
		Error string
		Until string
		Items []linkItem
	}{}
	status := http.StatusOK
	switch code := phonebook.ErrorCode(err); {
	case err == nil:
		data.Until = until.UTC().Format("2 Jan 2006 15:04 UTC")
		for i, info := range infos {
			label := info.Name
			if label == "" {
				label = fmt.Sprintf("medium %d", i+1)
			}
			data.Items = append(data.Items, linkItem{
				Href: "/m/" + url.PathEscape(tok) + "/" + strconv.Itoa(i), Label: label, Type: info.ContentType,
				Size: humanSize(info.Size), Thumb: info.Thumbnail,
			})
		}
	case code == phonebook.EExpired:
		status, data.Error = http.StatusGone, "This link has expired; the media are no longer here."
	case code == phonebook.ENotFound:
		s.linkMiss(r)
		status, data.Error = http.StatusNotFound, "There is nothing at this link."
	default:
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; img-src 'self'")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	return linkPage.Execute(w, data)
}

func (s *Server) linkMedia(thumbnail bool) HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.linkGuard(r); err != nil {
			return err
		}
		tok := r.PathValue("token")
		infos, _, err := s.media.ResolveLink(r.Context(), tok)
		if phonebook.ErrorCode(err) == phonebook.ENotFound {
			s.linkMiss(r) // a wrong token, not a wrong number after a right one
		}
		if err != nil {
			return err
		}
		n, err := strconv.Atoi(r.PathValue("n"))
		if err != nil || n < 0 || n >= len(infos) {
			return phonebook.Errorf(phonebook.ENotFound, "this link has %d media, numbered from 0", len(infos))
		}
		rs, info, err := s.media.OpenLink(r.Context(), tok, n, thumbnail)
		if err != nil {
			return err
		}
		defer rs.Close()
		w.Header().Set("Referrer-Policy", "no-referrer")
		serveMedia(w, r, rs, info, thumbnail, "private")
		return nil
	}
}

// linkGuard refuses an address that has tried too many wrong links this
// hour: tokens cannot be guessed, and guessing is not let to go on.
func (s *Server) linkGuard(r *http.Request) error {
	n, reset, err := s.counter.Count(r.Context(), "media:linkmiss:"+s.AddrKey(r), time.Hour)
	if err != nil {
		return err
	}
	if limit := s.media.Config().LinkFailuresPerAddressHour; n >= int64(limit) {
		e := phonebook.Errorf(phonebook.ERateLimited, "too many wrong media links from this address this hour (%d)", limit)
		e.RetryAfter = reset
		return e
	}
	return nil
}

func (s *Server) linkMiss(r *http.Request) {
	s.counter.Hits(context.WithoutCancel(r.Context()), []store.CounterHit{{Name: "media:linkmiss:" + s.AddrKey(r), Window: time.Hour}})
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return strings.TrimSpace(fmt.Sprintf("%d bytes", n))
}
