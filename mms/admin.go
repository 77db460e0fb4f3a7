package mms

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/store"
)

// Provisioning is one line of an operator's capability list.
type Provisioning struct {
	Number  phonebook.MSISDN
	Capable bool
}

// MaxImportBytes bounds a capability list sent to the admin endpoint.
const MaxImportBytes = 32 << 20

// ParseCapabilityList reads an operator's list of MMS-capable numbers: one
// number per line, optionally followed by a comma (or spaces) and yes/no
// (also true/false, 1/0, capable/incapable); a number alone is capable.
// Numbers in national form are read in region. Blank lines and lines
// starting with # are skipped. An error names the line.
func ParseCapabilityList(r io.Reader, region string) ([]Provisioning, error) {
	var out []Provisioning
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 4096)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		num, flag := line, ""
		if i := strings.IndexAny(line, ",;\t"); i >= 0 {
			num, flag = strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
		}
		msisdn, err := phonebook.NormalizeMSISDN(num, region)
		if err != nil {
			return nil, phonebook.Errorf(phonebook.EInvalid, "line %d: %q: %s", n, num, phonebook.ErrorMessage(err))
		}
		capable, err := parseCapable(flag)
		if err != nil {
			return nil, phonebook.Errorf(phonebook.EInvalid, "line %d: %s", n, err)
		}
		out = append(out, Provisioning{Number: msisdn, Capable: capable})
	}
	if err := sc.Err(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, phonebook.Errorf(phonebook.ETooLarge, "the list is over %d bytes: split it", mbe.Limit)
		}
		return nil, phonebook.Errorf(phonebook.EInvalid, "reading the list: %v (lines are at most 4096 bytes)", err)
	}
	return out, nil
}

func parseCapable(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "", "yes", "y", "true", "1", "capable":
		return true, nil
	case "no", "n", "false", "0", "incapable", "not_capable":
		return false, nil
	}
	return false, fmt.Errorf("%q is not yes or no", s)
}

// Import records an operator's list in chunks; it returns how many numbers
// were set capable and not capable.
func (c *Capabilities) Import(ctx context.Context, list []Provisioning) (capable, not int, err error) {
	const chunk = 1000
	for start := 0; start < len(list); start += chunk {
		batch := list[start:min(start+chunk, len(list))]
		cs := make([]store.MMSCapability, len(batch))
		for i, p := range batch {
			cs[i] = store.MMSCapability{Number: p.Number, Source: store.CapabilityOperator, Capable: p.Capable}
			if p.Capable {
				capable++
			} else {
				not++
			}
		}
		if err := c.db.SetMMSCapability(ctx, cs...); err != nil {
			return 0, 0, err
		}
	}
	return capable, not, nil
}

// VerdictJSON is how the admin endpoint and CLI show a verdict.
type VerdictJSON struct {
	Number  phonebook.MSISDN `json:"number"`
	Capable bool             `json:"capable"`
	Source  string           `json:"source"` // operator, client, mmsc, prefix, none
	Since   *time.Time       `json:"since,omitempty"`
	Reports []ReportJSON     `json:"reports"`
}

// ReportJSON is one source's word about a number.
type ReportJSON struct {
	Source    string    `json:"source"`
	Capable   bool      `json:"capable"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Describe returns the verdict on number in its JSON form.
func (c *Capabilities) Describe(ctx context.Context, number phonebook.MSISDN) (VerdictJSON, error) {
	v, err := c.Capable(ctx, number)
	if err != nil {
		return VerdictJSON{}, err
	}
	out := VerdictJSON{Number: number, Capable: v.Capable, Source: v.Source, Reports: []ReportJSON{}}
	if !v.Since.IsZero() {
		out.Since = &v.Since
	}
	for _, r := range v.Reports {
		out.Reports = append(out.Reports, ReportJSON{Source: r.Source, Capable: r.Capable, UpdatedAt: r.UpdatedAt})
	}
	return out, nil
}

// AdminHandler serves operator provisioning on the admin listener
// (docs/mms.md#who-is-mms-capable):
//
//	GET    /admin/mms-capable/{number}            the verdict and every source's word
//	PUT    /admin/mms-capable/{number}            {"capable": true|false}: the operator's word
//	DELETE /admin/mms-capable/{number}[?source=]  forget the operator's (or source's, or "all") word
//	POST   /admin/mms-capable/import              a list (ParseCapabilityList) as text/plain or text/csv
func (c *Capabilities) AdminHandler(region string) http.Handler {
	mux := http.NewServeMux()
	number := func(r *http.Request) (phonebook.MSISDN, error) {
		return phonebook.NormalizeMSISDN(r.PathValue("number"), region)
	}
	handle := func(pattern string, f func(w http.ResponseWriter, r *http.Request) error) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if err := f(w, r); err != nil {
				api.WriteError(w, err)
			}
		})
	}
	handle("GET /admin/mms-capable/{number}", func(w http.ResponseWriter, r *http.Request) error {
		n, err := number(r)
		if err != nil {
			return err
		}
		v, err := c.Describe(r.Context(), n)
		if err != nil {
			return err
		}
		return api.WriteJSON(w, http.StatusOK, v)
	})
	handle("PUT /admin/mms-capable/{number}", func(w http.ResponseWriter, r *http.Request) error {
		n, err := number(r)
		if err != nil {
			return err
		}
		r.Body = http.MaxBytesReader(w, r.Body, 4096)
		var body struct {
			Capable *bool `json:"capable"`
		}
		if err := api.DecodeJSON(r, &body); err != nil {
			return err
		}
		if body.Capable == nil {
			return phonebook.Errorf(phonebook.EInvalid, "capable (true or false) is required")
		}
		if err := c.Report(r.Context(), n, store.CapabilityOperator, *body.Capable); err != nil {
			return err
		}
		v, err := c.Describe(r.Context(), n)
		if err != nil {
			return err
		}
		return api.WriteJSON(w, http.StatusOK, v)
	})
	handle("DELETE /admin/mms-capable/{number}", func(w http.ResponseWriter, r *http.Request) error {
		n, err := number(r)
		if err != nil {
			return err
		}
		source := r.URL.Query().Get("source")
		switch source {
		case "":
			source = store.CapabilityOperator
		case "all":
			source = ""
		}
		gone, err := c.Forget(r.Context(), n, source)
		if err != nil {
			return err
		}
		if !gone {
			return phonebook.Errorf(phonebook.ENotFound, "no such MMS capability record for %s", n)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	handle("POST /admin/mms-capable/import", func(w http.ResponseWriter, r *http.Request) error {
		ct := r.Header.Get("Content-Type")
		if ct != "" && !strings.HasPrefix(ct, "text/plain") && !strings.HasPrefix(ct, "text/csv") {
			return phonebook.Errorf(phonebook.EMediaType, "send the list as text/plain or text/csv, not %q", ct)
		}
		body := http.MaxBytesReader(w, r.Body, MaxImportBytes)
		list, err := ParseCapabilityList(body, region)
		if err != nil {
			return err
		}
		yes, no, err := c.Import(r.Context(), list)
		if err != nil {
			return err
		}
		return api.WriteJSON(w, http.StatusOK, map[string]int{"capable": yes, "not_capable": no})
	})
	return mux
}
