package mm7_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/mm7"
)

type vasp struct {
	mu      sync.Mutex
	reports []*mm7.DeliveryReportReq
	mos     []*mm7.DeliverReq
}

func newVASP(t *testing.T, maxBytes int64) (*vasp, *httptest.Server) {
	v := &vasp{}
	h := &mm7.Handler{
		Username: "mmsc", Password: "pw", MaxBytes: maxBytes,
		DeliveryReport: func(_ context.Context, r *mm7.DeliveryReportReq) mm7.Status {
			v.mu.Lock()
			defer v.mu.Unlock()
			if r.MessageID == "unknown" {
				return mm7.NewStatus(mm7.StatusMessageIDNotFound, "no message "+r.MessageID)
			}
			v.reports = append(v.reports, r)
			return mm7.Status{}
		},
		Deliver: func(_ context.Context, r *mm7.DeliverReq) mm7.Status {
			if r.Subject == "panic" {
				panic("boom")
			}
			v.mu.Lock()
			defer v.mu.Unlock()
			v.mos = append(v.mos, r)
			return mm7.NewStatus(mm7.StatusSuccess, "")
		},
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return v, srv
}

func TestHandlerTakesDeliveryReportsAndMO(t *testing.T) {
	for _, version := range []string{mm7.REL5, mm7.REL6} {
		t.Run(version, func(t *testing.T) {
			v, srv := newVASP(t, 0)
			c := mm7.NewClient(mm7.ClientConfig{URL: srv.URL, Username: "mmsc", Password: "pw", Version: version})
			ctx := context.Background()
			date := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
			odd := "MMSC:0001/α&<β>#7"
			st, err := c.DeliveryReport(ctx, &mm7.DeliveryReportReq{MessageID: odd, Recipient: "+8613800138000", Sender: "10690042", Date: date, MMStatus: "Retrieved", StatusText: "ok"})
			if err != nil || st.Code != 1000 {
				t.Fatalf("report: %v %v", st, err)
			}
			r := v.reports[0]
			if r.MessageID != odd || r.Recipient != "+8613800138000" || r.Sender != "10690042" || !r.Date.Equal(date) || !r.Delivered() || !r.Final() || r.StatusText != "ok" {
				t.Fatalf("report = %+v", r)
			}
			_, err = c.DeliveryReport(ctx, &mm7.DeliveryReportReq{MessageID: "unknown", Recipient: "+1", MMStatus: "Retrieved"})
			var se *mm7.StatusError
			if !errors.As(err, &se) || se.Status.Code != mm7.StatusMessageIDNotFound || mm7.Temporary(err) {
				t.Fatalf("unknown id: %v", err)
			}

			img := mm7.Part{ContentType: "image/gif", ContentID: "g", Data: photo(5000)}
			parts := []mm7.Part{img, mm7.CaptionPart("来自手机")}
			st, err = c.Deliver(ctx, &mm7.DeliverReq{LinkedID: "L1", Sender: "+8613900001111", Recipients: []string{"10690042"}, Subject: "hi", Parts: parts, SMIL: mm7.BuildSMIL(parts, "来自手机")})
			if err != nil || !st.Success() {
				t.Fatalf("deliver: %v %v", st, err)
			}
			mo := v.mos[0]
			if mo.LinkedID != "L1" || mo.Sender != "+8613900001111" || len(mo.Recipients) != 1 || mo.Recipients[0] != "10690042" || mo.Subject != "hi" || mo.Received.IsZero() {
				t.Fatalf("mo = %+v", mo)
			}
			if len(mo.Parts) != 2 || !bytes.Equal(mo.Parts[0].Data, img.Data) || string(mo.Parts[1].Data) != "来自手机" || len(mo.SMIL) == 0 {
				t.Fatalf("mo parts %d, smil %q", len(mo.Parts), mo.SMIL)
			}

			_, err = c.Deliver(ctx, &mm7.DeliverReq{Sender: "+1", Subject: "panic"})
			if !errors.As(err, &se) || se.Status.Code != mm7.StatusServerError || !mm7.Temporary(err) {
				t.Fatalf("panicking handler: %v", err)
			}
		})
	}
}

// post sends a raw body to the handler and returns the HTTP status and body.
func post(t *testing.T, url, contentType, body string, auth bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if auth {
		req.SetBasicAuth("mmsc", "pw")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const envStart = `<?xml version="1.0"?><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Header><mm7:TransactionID xmlns:mm7="http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/REL-5-MM7-1-2">t1</mm7:TransactionID></env:Header><env:Body>`
const envEnd = `</env:Body></env:Envelope>`

func TestHandlerAnswersBadInputWithFaults(t *testing.T) {
	_, srv := newVASP(t, 64<<10)
	report := envStart + `<DeliveryReportReq xmlns="http://www.3gpp.org/ftp/Specs/archive/23_series/23.140/schema/REL-5-MM7-1-2"><MM7Version>5.3.0</MM7Version><MessageID>m1</MessageID><Recipient><Number>+1</Number></Recipient><MMStatus>Retrieved</MMStatus></DeliveryReportReq>` + envEnd
	mp := func(body string) string {
		return "--b\r\nContent-Type: text/xml\r\nContent-ID: <soap>\r\n\r\n" + body
	}
	cases := []struct {
		name, contentType, body string
		auth                    bool
		wantHTTP, wantCode      int
	}{
		{"no auth", "text/xml", report, false, 401, 4001},
		{"ok", "text/xml", report, true, 200, 1000},
		{"wrong content type", "application/json", `{}`, true, 415, 2007},
		{"no content type", "", report, true, 415, 2007},
		{"not xml", "text/xml", "hello", true, 400, 2007},
		{"truncated xml", "text/xml", report[:len(report)/2], true, 400, 2007},
		{"not an envelope", "text/xml", "<a/>", true, 400, 2007},
		{"empty body", "text/xml", envStart + envEnd, true, 400, 2007},
		{"no transaction id", "text/xml", `<env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body><DeliveryReportReq><MessageID>m</MessageID><MMStatus>Retrieved</MMStatus></DeliveryReportReq></env:Body></env:Envelope>`, true, 400, 4004},
		{"report without message id", "text/xml", envStart + `<DeliveryReportReq><MMStatus>Retrieved</MMStatus></DeliveryReportReq>` + envEnd, true, 400, 4004},
		{"unsupported op", "text/xml", envStart + `<CancelReq><MessageID>m</MessageID></CancelReq>` + envEnd, true, 400, 4003},
		{"submit to the vasp", "text/xml", envStart + `<SubmitReq><Recipients><To><Number>+1</Number></To></Recipients></SubmitReq>` + envEnd, true, 400, 4003},
		{"multipart without boundary", "multipart/related", report, true, 400, 2007},
		{"truncated multipart", `multipart/related; boundary="b"`, mp(report), true, 400, 2007},
		{"multipart missing start", `multipart/related; boundary="b"; start="<nope>"`, mp(report) + "\r\n--b--\r\n", true, 400, 2007},
		{"content href to nothing", `multipart/related; boundary="b"`, mp(envStart+`<DeliverReq><Sender><Number>+1</Number></Sender><Content href="cid:missing"/></DeliverReq>`+envEnd) + "\r\n--b--\r\n", true, 400, 2007},
		{"bad base64", `multipart/related; boundary="b"`, mp(envStart+`<DeliverReq><Sender><Number>+1</Number></Sender><Content href="cid:c"/></DeliverReq>`+envEnd) + "\r\n--b\r\nContent-ID: <c>\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--b--\r\n", true, 400, 2007},
		{"oversized", "text/xml", envStart + strings.Repeat(" ", 65<<10) + envEnd, true, 413, 2004},
		{"entity expansion", "text/xml", `<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"><env:Body>&a;</env:Body></env:Envelope>`, true, 400, 2007},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, srv.URL, tc.contentType, tc.body, tc.auth)
			if code != tc.wantHTTP {
				t.Fatalf("HTTP %d, want %d: %s", code, tc.wantHTTP, body)
			}
			if want := "<StatusCode>" + strconv.Itoa(tc.wantCode) + "</StatusCode>"; !strings.Contains(body, want) {
				t.Fatalf("body lacks %s: %s", want, body)
			}
			if tc.wantHTTP != 200 && (!strings.Contains(body, "VASPErrorRsp") || !strings.Contains(body, "<Details>")) {
				t.Fatalf("fault without VASPErrorRsp details: %s", body)
			}
			if tc.wantCode == 4003 && !strings.Contains(body, `env:mustUnderstand="1">t1</mm7:TransactionID>`) {
				t.Fatalf("the fault does not quote the request's TransactionID: %s", body)
			}
		})
	}
	code, _ := func() (int, string) {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, ""
	}()
	if code != http.StatusUnauthorized {
		t.Fatalf("GET without auth: %d", code)
	}
}

// TestParsesAnMMSCsFlatDeliverReq reads a DeliverReq the way some MMSCs
// write it: LF line endings, no start parameter, another prefix, a REL-6
// namespace we do not write, no Content href with the parts beside the
// envelope, quoted-printable text, base64 without padding, an MM1-style
// address.
func TestParsesAnMMSCsFlatDeliverReq(t *testing.T) {
	v, srv := newVASP(t, 0)
	data, err := os.ReadFile("testdata/deliver_flat.txt")
	if err != nil {
		t.Fatal(err)
	}
	code, body := post(t, srv.URL, "multipart/related; boundary=MIME_boundary; type=text/xml", string(data), true)
	if code != 200 || !strings.Contains(body, "<DeliverRsp") || !strings.Contains(body, "REL-6-MM7-1-0") || !strings.Contains(body, "<MM7Version>6.3.0</MM7Version>") ||
		!strings.Contains(body, "<StatusCode>1000</StatusCode>") || !strings.Contains(body, ">1000001</mm7:TransactionID>") {
		t.Fatalf("HTTP %d: %s", code, body)
	}
	mo := v.mos[0]
	if mo.TransactionID != "1000001" || mo.LinkedID != "LNK-77" || mo.Sender != "+8613900001111" || len(mo.Recipients) != 1 || mo.Recipients[0] != "10690042" ||
		mo.Subject != "Photo" || !mo.Received.Equal(time.Date(2026, 11, 29, 12, 15, 0, 0, time.UTC)) {
		t.Fatalf("mo %+v", mo)
	}
	if len(mo.Parts) != 2 || string(mo.Parts[0].Data) != "Café at 8? Bring the photo." || mo.Parts[0].ContentLocation != "text_0.txt" {
		t.Fatalf("text part %+v", mo.Parts)
	}
	if gif := mo.Parts[1]; gif.ContentID != "dot" || len(gif.Data) != 35 || !bytes.HasPrefix(gif.Data, []byte("GIF89a")) {
		t.Fatalf("gif part %q %q %d bytes", gif.ContentType, gif.ContentID, len(gif.Data))
	}
}

func TestMOTextInOtherCharsetsArrivesAsUTF8(t *testing.T) {
	v, srv := newVASP(t, 0)
	c := mm7.NewClient(mm7.ClientConfig{URL: srv.URL, Username: "mmsc", Password: "pw"})
	gbk := []byte{0xc4, 0xe3, 0xba, 0xc3} // 你好 in GB2312
	parts := []mm7.Part{
		{ContentType: "text/plain; charset=gb2312", ContentLocation: "a.txt", Data: gbk},
		{ContentType: "text/plain; charset=x-unknown", ContentLocation: "b.txt", Data: []byte("as is")},
	}
	if _, err := c.Deliver(context.Background(), &mm7.DeliverReq{Sender: "+8613900001111", Recipients: []string{"10690042"}, Parts: parts}); err != nil {
		t.Fatal(err)
	}
	got := v.mos[0].Parts
	if string(got[0].Data) != "你好" || got[0].ContentType != "text/plain; charset=utf-8" {
		t.Fatalf("gb2312 part: %q %q", got[0].ContentType, got[0].Data)
	}
	if string(got[1].Data) != "as is" || got[1].ContentType != "text/plain; charset=x-unknown" {
		t.Fatalf("unknown charset part: %q %q", got[1].ContentType, got[1].Data)
	}
}
