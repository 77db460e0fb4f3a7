package mmscsim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/mm7"
	"github.com/phonebook/phonebook/mm7/mmscsim"
)

// vasp is the VASP's MM7 endpoint: a real mm7.Handler over HTTP.
type vasp struct {
	mu      sync.Mutex
	reports []*mm7.DeliveryReportReq
	mos     []*mm7.DeliverReq
	srv     *httptest.Server
}

func newVASP(t *testing.T) *vasp {
	v := &vasp{}
	v.srv = httptest.NewServer(&mm7.Handler{
		Username: "mmsc", Password: "mmsc-pw",
		DeliveryReport: func(_ context.Context, r *mm7.DeliveryReportReq) mm7.Status {
			v.mu.Lock()
			defer v.mu.Unlock()
			v.reports = append(v.reports, r)
			return mm7.Status{}
		},
		Deliver: func(_ context.Context, r *mm7.DeliverReq) mm7.Status {
			v.mu.Lock()
			defer v.mu.Unlock()
			v.mos = append(v.mos, r)
			return mm7.Status{}
		},
	})
	t.Cleanup(v.srv.Close)
	return v
}

func (v *vasp) reportsFor(id string) []*mm7.DeliveryReportReq {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []*mm7.DeliveryReportReq
	for _, r := range v.reports {
		if r.MessageID == id {
			out = append(out, r)
		}
	}
	return out
}

func start(t *testing.T, cfg mmscsim.Config) (*mmscsim.Sim, *mm7.Client) {
	t.Helper()
	cfg.Username, cfg.Password = "vasp", "vasp-pw"
	cfg.VASPUsername, cfg.VASPPassword = "mmsc", "mmsc-pw"
	sim := mmscsim.New(cfg)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	c := mm7.NewClient(mm7.ClientConfig{URL: sim.URL(), Username: "vasp", Password: "vasp-pw", VASPID: "pb", VASID: "im", Timeout: 5 * time.Second})
	t.Cleanup(c.Close)
	return sim, c
}

func message(to string) *mm7.SubmitReq {
	img := mm7.Part{ContentType: "image/jpeg", ContentID: "p1", ContentLocation: "photo.jpg", Data: bytes.Repeat([]byte{0xFF, 0xD8, 1, 2}, 25<<10)}
	parts := []mm7.Part{img, mm7.CaptionPart("look at this")}
	return &mm7.SubmitReq{SenderAddress: "10690042", To: []string{to}, Subject: "photo", Parts: parts, SMIL: mm7.BuildSMIL(parts, "look at this"), DeliveryReport: true}
}

func TestSimRecordsPartsAndReportsDelivery(t *testing.T) {
	for _, style := range []string{"hex", "short", "odd"} {
		t.Run(style, func(t *testing.T) {
			v := newVASP(t)
			var out bytes.Buffer
			sim, c := start(t, mmscsim.Config{VASPURL: v.srv.URL, MessageIDStyle: style, Output: &syncWriter{w: &out}})
			req := message("+8613800138000")
			rsp, err := c.Submit(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			subs := sim.Submissions()
			if len(subs) != 1 {
				t.Fatalf("%d submissions", len(subs))
			}
			s := subs[0]
			if s.MessageID != rsp.MessageID || s.TransactionID != rsp.TransactionID || s.VASPID != "pb" || s.Sender != "10690042" || s.To[0] != "+8613800138000" {
				t.Fatalf("submission %+v, rsp %+v", s, rsp)
			}
			if len(s.Parts) != 2 || !bytes.Equal(s.Parts[0].Data, req.Parts[0].Data) || string(s.Parts[1].Data) != "look at this" || s.SMIL != string(req.SMIL) {
				t.Fatalf("parts/SMIL not recorded as sent: %d parts, smil %q", len(s.Parts), s.SMIL)
			}
			poll.Until(t, "the delivery report", func() bool { return len(v.reportsFor(rsp.MessageID)) == 1 })
			r := v.reportsFor(rsp.MessageID)[0]
			if r.Recipient != "+8613800138000" || r.MMStatus != "Retrieved" || r.Sender != "10690042" {
				t.Fatalf("report %+v", r)
			}
			poll.Until(t, "the report's outcome recorded", func() bool { rs := sim.Reports(); return len(rs) == 1 && rs[0].Done })
			if st := sim.Stats(); st.Submits != 1 || st.ReportsSent != 1 {
				t.Fatalf("stats %+v", st)
			}
			if !strings.Contains(out.String(), `"look at this"`) {
				t.Fatalf("output: %s", out.String())
			}
		})
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func TestSimReportBeforeResponse(t *testing.T) {
	v := newVASP(t)
	_, c := start(t, mmscsim.Config{VASPURL: v.srv.URL, ReportBeforeResp: true})
	rsp, err := c.Submit(context.Background(), message("+8613800138000"))
	if err != nil {
		t.Fatal(err)
	}
	// The report was taken before the SubmitRsp was written.
	if n := len(v.reportsFor(rsp.MessageID)); n != 1 {
		t.Fatalf("%d reports when Submit returned", n)
	}
}

func TestSimNotCapable(t *testing.T) {
	sim, c := start(t, mmscsim.Config{NotCapablePrefixes: []string{"+86137"}})
	_, err := c.Submit(context.Background(), message("+8613700137000"))
	if !mm7.IsNotCapable(err) || mm7.Temporary(err) {
		t.Fatalf("err = %v", err)
	}
	if _, err := c.Submit(context.Background(), message("+8613800138000")); err != nil {
		t.Fatal(err)
	}
	sim.SetNotCapable(nil)
	if _, err := c.Submit(context.Background(), message("+8613700137000")); err != nil {
		t.Fatal(err)
	}
	if st := sim.Stats(); st.NotCapable != 1 || st.Submits != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSimFaults(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name      string
		set       func(*mmscsim.Sim)
		recorded  bool // the message was taken anyway
		temporary bool
		code      int
	}{
		{"http 503", func(s *mmscsim.Sim) { s.SetHTTPErrorEvery(1, 503) }, false, true, 0},
		{"soap fault 4006", func(s *mmscsim.Sim) { s.SetFaultEvery(1, 4006) }, false, true, 4006},
		{"soap fault 3002", func(s *mmscsim.Sim) { s.SetFaultEvery(1, 3002) }, false, false, 3002},
		{"dropped connection", func(s *mmscsim.Sim) { s.SetDropEvery(1) }, false, true, 0},
		{"reset, response lost", func(s *mmscsim.Sim) { s.SetResetEvery(1) }, true, true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sim, c := start(t, mmscsim.Config{})
			tc.set(sim)
			_, err := c.Submit(ctx, message("+8613800138000"))
			var se *mm7.StatusError
			if err == nil || mm7.Temporary(err) != tc.temporary || errors.As(err, &se) != (tc.code != 0) || tc.code != 0 && se.Status.Code != tc.code {
				t.Fatalf("err = %v (%T)", err, err)
			}
			subs := sim.Submissions()
			if got := len(subs) == 1; got != tc.recorded {
				t.Fatalf("recorded = %v", got)
			}
			if tc.recorded && !subs[0].ResponseLost {
				t.Fatal("not marked response_lost")
			}
		})
	}
}

func TestSimDownAndBack(t *testing.T) {
	sim, c := start(t, mmscsim.Config{})
	ctx := context.Background()
	if err := sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, message("+8613800138000")); err == nil || !mm7.Temporary(err) {
		t.Fatalf("while down: %v", err)
	}
	if err := sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Submit(ctx, message("+8613800138000")); err != nil {
		t.Fatalf("after coming back: %v", err)
	}
}

func TestSimInjectMO(t *testing.T) {
	v := newVASP(t)
	sim, _ := start(t, mmscsim.Config{VASPURL: v.srv.URL})
	err := sim.InjectMO(context.Background(), mmscsim.MO{From: "+8613900001111", To: "10690042", Subject: "re", Text: "好的",
		Media: []mm7.Part{{ContentType: "image/png", ContentLocation: "a.png", Data: []byte("\x89PNG....")}}})
	if err != nil {
		t.Fatal(err)
	}
	mo := v.mos[0]
	if mo.Sender != "+8613900001111" || mo.Recipients[0] != "10690042" || len(mo.Parts) != 2 || string(mo.Parts[1].Data) != "好的" || !bytes.Contains(mo.SMIL, []byte("a.png")) {
		t.Fatalf("mo %+v", mo)
	}
}

// RepeatMOEvery sends every Nth MO twice under one TransactionID, as an
// MMSC that lost the VASP's answer does; an MO's own TransactionID is
// kept.
func TestSimRepeatsMO(t *testing.T) {
	v := newVASP(t)
	sim, _ := start(t, mmscsim.Config{VASPURL: v.srv.URL, RepeatMOEvery: 2})
	for i := range 4 {
		if err := sim.InjectMO(context.Background(), mmscsim.MO{TransactionID: fmt.Sprint("tx-", i), From: "+8613900001111", To: "10690042", Text: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, mo := range v.mos {
		got = append(got, mo.TransactionID+"="+string(mo.Parts[0].Data))
	}
	if want := []string{"tx-0=0", "tx-1=1", "tx-1=1", "tx-2=2", "tx-3=3", "tx-3=3"}; !slices.Equal(got, want) {
		t.Fatalf("the VASP got %v, want %v", got, want)
	}
	if st := sim.Stats(); st.MOsRepeated != 2 || st.MOs != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestSimRefusesBadInput(t *testing.T) {
	sim, _ := start(t, mmscsim.Config{MaxBytes: 1 << 10})
	for _, tc := range []struct {
		name, ct, body string
		auth           bool
		want           int
	}{
		{"no auth", "text/xml", "<x/>", false, 401},
		{"wrong content type", "image/png", "....", true, 415},
		{"oversized", "text/xml", strings.Repeat("x", 2<<10), true, 413},
		{"malformed", "text/xml", "<env:Envelope", true, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", sim.URL(), strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ct)
			if tc.auth {
				req.SetBasicAuth("vasp", "vasp-pw")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("HTTP %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

func TestSimControlHTTP(t *testing.T) {
	v := newVASP(t)
	sim, c := start(t, mmscsim.Config{VASPURL: v.srv.URL, ReportDelay: time.Hour})
	addr, err := sim.StartHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	postJSON := func(path, body string) (int, map[string]any) {
		resp, err := http.Post(base+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	if code, _ := postJSON("/faults", `{"fault_every":1,"fault_code":4006}`); code != 200 {
		t.Fatalf("/faults: %d", code)
	}
	if _, err := c.Submit(context.Background(), message("+8613800138000")); !mm7.Temporary(err) {
		t.Fatalf("with fault_every 1: %v", err)
	}
	postJSON("/faults", `{"fault_every":0}`)
	rsp, err := c.Submit(context.Background(), message("+8613800138000"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out := postJSON("/report", `{"message_id":"`+rsp.MessageID+`","recipient":"+8613800138000","status":"rejected"}`); code != 200 {
		t.Fatalf("/report: %d %v", code, out)
	}
	if r := v.reportsFor(rsp.MessageID); len(r) != 1 || r[0].MMStatus != "Rejected" {
		t.Fatalf("reports %v", r)
	}
	if code, _ := postJSON("/mo", `{"from":"+8613900001111","to":"10690042","text":"hi","media":[{"content_type":"image/gif","name":"x.gif","data":"R0lGODlh"}]}`); code != 200 {
		t.Fatalf("/mo: %d", code)
	}
	for _, bad := range []struct{ path, body string }{
		{"/faults", `{"drop_every":-1}`}, {"/faults", `{"nope":1}`}, {"/resp-delay", `{"delay":"soon"}`},
		{"/mo", `{"from":"+1"}`}, {"/down", `{}`}, {"/report", `{"message_id":"x"}`},
	} {
		if code, _ := postJSON(bad.path, bad.body); code != 400 {
			t.Errorf("%s %s: %d, want 400", bad.path, bad.body, code)
		}
	}
	resp, err := http.Get(base + "/submissions")
	if err != nil {
		t.Fatal(err)
	}
	var subs []struct {
		MessageID string `json:"message_id"`
		Parts     []struct {
			Size int    `json:"size"`
			Data []byte `json:"data"`
		} `json:"parts"`
	}
	json.NewDecoder(resp.Body).Decode(&subs)
	resp.Body.Close()
	if len(subs) != 1 || subs[0].MessageID != rsp.MessageID || subs[0].Parts[0].Size != 100<<10 || subs[0].Parts[0].Data != nil {
		t.Fatalf("submissions %+v", subs)
	}
	if code, out := postJSON("/down", `{"down":true}`); code != 200 || out["down"] != true {
		t.Fatalf("/down: %d %v", code, out)
	}
	if _, err := c.Submit(context.Background(), message("+8613800138000")); err == nil {
		t.Fatal("submit while down succeeded")
	}
	postJSON("/down", `{"down":false}`)
	if _, err := c.Submit(context.Background(), message("+8613800138000")); err != nil {
		t.Fatal(err)
	}
}

func TestSimKeepsTheNewest(t *testing.T) {
	sim, c := start(t, mmscsim.Config{Keep: 2})
	var last string
	for range 5 {
		rsp, err := c.Submit(context.Background(), message("+8613800138000"))
		if err != nil {
			t.Fatal(err)
		}
		last = rsp.MessageID
	}
	ctx, cancel := context.WithTimeout(context.Background(), poll.Patience)
	defer cancel()
	subs, err := sim.WaitSubmissions(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != 2 || subs[1].MessageID != last || sim.Stats().Submits != 5 {
		t.Fatalf("kept %d, last %q (want %q), stats %+v", len(subs), subs[len(subs)-1].MessageID, last, sim.Stats())
	}
}

func TestSimOverTLS(t *testing.T) {
	srv := httptest.NewUnstartedServer(nil)
	srv.StartTLS() // for its certificate
	defer srv.Close()
	sim := mmscsim.New(mmscsim.Config{TLS: srv.TLS})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if !strings.HasPrefix(sim.URL(), "https://") {
		t.Fatalf("url %s", sim.URL())
	}
	c := mm7.NewClient(mm7.ClientConfig{URL: sim.URL(), TLS: srv.Client().Transport.(*http.Transport).TLSClientConfig})
	defer c.Close()
	if _, err := c.Submit(context.Background(), message("+8613800138000")); err != nil {
		t.Fatal(err)
	}
	plain := mm7.NewClient(mm7.ClientConfig{URL: "http://" + sim.Addr() + "/mm7"})
	defer plain.Close()
	if _, err := plain.Submit(context.Background(), message("+8613800138000")); err == nil {
		t.Fatal("plain HTTP taken by a TLS-only MMSC")
	}
	untrusting := mm7.NewClient(mm7.ClientConfig{URL: sim.URL()})
	defer untrusting.Close()
	if _, err := untrusting.Submit(context.Background(), message("+8613800138000")); err == nil {
		t.Fatal("an unknown certificate was trusted")
	}
}

// TestSimClosesWithWorkInFlight: Close returns while a SubmitRsp is held
// back and reports wait to be sent again, and the VASP sees an error.
func TestSimClosesWithWorkInFlight(t *testing.T) {
	v := newVASP(t)
	v.srv.Close() // reports fail and wait to be sent again
	sim, c := start(t, mmscsim.Config{VASPURL: v.srv.URL, RespDelay: time.Hour, RedeliverAfter: time.Hour})
	errs := make(chan error, 1)
	go func() {
		_, err := c.Submit(context.Background(), message("+8613800138000"))
		errs <- err
	}()
	poll.Until(t, "the message taken", func() bool { return sim.Stats().Submits == 1 })
	poll.Until(t, "a report attempt", func() bool { return sim.Stats().ReportsFailed == 1 })
	sim.Close()
	if err := <-errs; err == nil || !mm7.Temporary(err) {
		t.Fatalf("submit: %v", err)
	}
}

func TestSimMixedReports(t *testing.T) {
	v := newVASP(t)
	_, c := start(t, mmscsim.Config{VASPURL: v.srv.URL, ReportStatus: "MIXED", MessageIDStyle: "short"})
	want := map[string]string{"1": "Retrieved", "2": "Rejected", "3": "Expired", "4": "Retrieved"}
	for range want {
		if _, err := c.Submit(context.Background(), message("+8613800138000")); err != nil {
			t.Fatal(err)
		}
	}
	for id, status := range want {
		poll.Until(t, "the report for "+id, func() bool { return len(v.reportsFor(id)) == 1 })
		if got := v.reportsFor(id)[0].MMStatus; got != status {
			t.Errorf("message %s: %s, want %s", id, got, status)
		}
	}
}
