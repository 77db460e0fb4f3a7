package mm7_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/mm7"
)

// mmsc is a minimal MMSC for the client's tests: it records each parsed
// request and answers what answer says.
type mmsc struct {
	mu     sync.Mutex
	reqs   []*mm7.Request
	answer func(w http.ResponseWriter, req *mm7.Request)
}

func (m *mmsc) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !mm7.CheckBasicAuth(r, "vasp", "secret") {
		mm7.WriteFault(w, nil, mm7.ErrUnauthorized)
		return
	}
	req, err := mm7.ReadRequest(r, 0)
	if err != nil {
		mm7.WriteFault(w, req, err)
		return
	}
	m.mu.Lock()
	m.reqs = append(m.reqs, req)
	m.mu.Unlock()
	if m.answer != nil {
		m.answer(w, req)
		return
	}
	mm7.WriteResponse(w, req, mm7.NewStatus(mm7.StatusSuccess, ""), "msg-1")
}

func newMMSC(t *testing.T, answer func(w http.ResponseWriter, req *mm7.Request)) (*mmsc, *httptest.Server) {
	m := &mmsc{answer: answer}
	srv := httptest.NewServer(m)
	t.Cleanup(srv.Close)
	return m, srv
}

func photo(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestSubmitCarriesPartsSMILAndCaption(t *testing.T) {
	for _, version := range []string{mm7.REL5, mm7.REL6} {
		t.Run(version, func(t *testing.T) {
			m, srv := newMMSC(t, nil)
			c := mm7.NewClient(mm7.ClientConfig{URL: srv.URL + "/mm7", Username: "vasp", Password: "secret", VASPID: "phonebook", VASID: "im", Version: version})
			defer c.Close()
			img := mm7.Part{ContentType: "image/jpeg", ContentID: "img1", ContentLocation: "photo.jpg", Data: photo(100 << 10)}
			caption := "Saturn & its <rings> 🪐"
			parts := []mm7.Part{img, mm7.CaptionPart(caption)}
			req := &mm7.SubmitReq{SenderAddress: "10690042", To: []string{"+8613800138000"}, Subject: "A photo", ServiceCode: "sc-1",
				Parts: parts, SMIL: mm7.BuildSMIL(parts, caption), DeliveryReport: true, Expiry: time.Hour}
			rsp, err := c.Submit(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if rsp.MessageID != "msg-1" || !rsp.Status.Success() || rsp.TransactionID == "" {
				t.Fatalf("rsp = %+v", rsp)
			}
			got := m.reqs[0]
			if got.Version != version || got.TransactionID != rsp.TransactionID || got.Op != "SubmitReq" {
				t.Fatalf("request version %q tx %q op %q", got.Version, got.TransactionID, got.Op)
			}
			s := got.Submit
			if s.VASPID != "phonebook" || s.VASID != "im" || s.SenderAddress != "10690042" || s.ServiceCode != "sc-1" ||
				len(s.To) != 1 || s.To[0] != "+8613800138000" || s.Subject != "A photo" || !s.DeliveryReport {
				t.Fatalf("submit = %+v", s)
			}
			if s.Expiry < 59*time.Minute || s.Expiry > 61*time.Minute {
				t.Fatalf("expiry %v", s.Expiry)
			}
			if !bytes.Equal(s.SMIL, req.SMIL) {
				t.Fatalf("SMIL %q, want %q", s.SMIL, req.SMIL)
			}
			if len(s.Parts) != 2 {
				t.Fatalf("%d parts", len(s.Parts))
			}
			if p := s.Parts[0]; p.ContentType != "image/jpeg" || p.ContentID != "img1" || p.ContentLocation != "photo.jpg" || !bytes.Equal(p.Data, img.Data) {
				t.Fatalf("image part %q %q %q %d bytes", p.ContentType, p.ContentID, p.ContentLocation, len(p.Data))
			}
			if p := s.Parts[1]; string(p.Data) != caption || !strings.HasPrefix(p.ContentType, "text/plain") {
				t.Fatalf("caption part %q %q", p.ContentType, p.Data)
			}
		})
	}
}

func TestSubmitStatusesAndFaults(t *testing.T) {
	cases := []struct {
		name       string
		answer     func(w http.ResponseWriter, req *mm7.Request)
		permanent  bool
		notCapable bool
		status     int // 0 = not a StatusError
	}{
		{"rsp 2002 not capable", func(w http.ResponseWriter, req *mm7.Request) {
			mm7.WriteResponse(w, req, mm7.NewStatus(2002, "recipient +8613800138000 is not MMS capable"), "")
		}, true, true, 2002},
		{"rsp 2003 address not found", func(w http.ResponseWriter, req *mm7.Request) {
			mm7.WriteResponse(w, req, mm7.NewStatus(2003, ""), "")
		}, true, false, 2003},
		{"fault 4006 service unavailable", func(w http.ResponseWriter, req *mm7.Request) {
			mm7.WriteFault(w, req, &mm7.StatusError{HTTPStatus: 500, Status: mm7.NewStatus(4006, "busy")})
		}, false, false, 4006},
		{"fault 3001 not possible", func(w http.ResponseWriter, req *mm7.Request) {
			mm7.WriteFault(w, req, &mm7.StatusError{HTTPStatus: 500, Status: mm7.NewStatus(3001, "")})
		}, true, false, 3001},
		{"http 503 without soap", func(w http.ResponseWriter, req *mm7.Request) {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		}, false, false, 0},
		{"garbage xml", func(w http.ResponseWriter, req *mm7.Request) {
			w.Header().Set("Content-Type", "text/xml")
			w.Write([]byte("<env:Envelope><oops"))
		}, false, false, 0},
		{"bare RSErrorRsp euc-kr", func(w http.ResponseWriter, req *mm7.Request) {
			w.Header().Set("Content-Type", "text/xml; charset=euc-kr")
			w.Write([]byte(`<?xml version="1.0" encoding="euc-kr"?><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Header><mm7:TransactionID xmlns:mm7="http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/REL-5-MM7-1-2" env:mustUnderstand="1">tid </mm7:TransactionID></env:Header><env:Body><mm7:RSErrorRsp xmlns:mm7="http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/REL-5-MM7-1-2"><StatusText>Unsupported terminal</StatusText><MM7Version>5.3.0</MM7Version><StatusCode>6102</StatusCode></mm7:RSErrorRsp></env:Body></env:Envelope>`))
		}, true, true, 6102},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, srv := newMMSC(t, tc.answer)
			c := mm7.NewClient(mm7.ClientConfig{URL: srv.URL, Username: "vasp", Password: "secret"})
			defer c.Close()
			_, err := c.Submit(context.Background(), &mm7.SubmitReq{To: []string{"+8613800138000"}, Parts: []mm7.Part{mm7.CaptionPart("hi")}})
			if err == nil {
				t.Fatal("no error")
			}
			var se *mm7.StatusError
			if isStatus := errors.As(err, &se); isStatus != (tc.status != 0) || isStatus && se.Status.Code != tc.status {
				t.Fatalf("err = %v (%T)", err, err)
			}
			if mm7.Temporary(err) == tc.permanent || mm7.IsNotCapable(err) != tc.notCapable {
				t.Fatalf("err %v: temporary %v, not capable %v", err, mm7.Temporary(err), mm7.IsNotCapable(err))
			}
		})
	}
}

func TestSubmitWrongPasswordIsImproperIdentification(t *testing.T) {
	_, srv := newMMSC(t, nil)
	c := mm7.NewClient(mm7.ClientConfig{URL: srv.URL, Username: "vasp", Password: "wrong"})
	_, err := c.Submit(context.Background(), &mm7.SubmitReq{To: []string{"+8613800138000"}})
	var se *mm7.StatusError
	if !errors.As(err, &se) || se.Status.Code != mm7.StatusImproperIdentification || se.HTTPStatus != http.StatusUnauthorized {
		t.Fatalf("err = %v", err)
	}
}

func TestSubmitRefusesSMILPointingAtNothing(t *testing.T) {
	m, srv := newMMSC(t, nil)
	c := mm7.NewClient(mm7.ClientConfig{URL: srv.URL, Username: "vasp", Password: "secret"})
	parts := []mm7.Part{{ContentType: "image/png", ContentLocation: "a.png", Data: []byte("x")}}
	_, err := c.Submit(context.Background(), &mm7.SubmitReq{To: []string{"+1"}, Parts: parts, SMIL: mm7.BuildSMIL(parts, "a caption without its part")})
	var se *mm7.StatusError
	if !errors.As(err, &se) || se.Status.Code != mm7.StatusMessageFormatCorrupt || mm7.Temporary(err) || !strings.Contains(err.Error(), mm7.CaptionLocation) {
		t.Fatalf("err = %v", err)
	}
	if len(m.reqs) != 0 {
		t.Fatal("sent anyway")
	}
}
