package smscsim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// syncBuffer is an io.Writer safe for the simulator's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, cfg smscsim.Config, h smsc.DeliverHandler) (*smscsim.Sim, *smsc.Router) {
	t.Helper()
	sim := smscsim.New(cfg)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	r, err := smsc.NewRouter([]smsc.LinkConfig{{Name: "a", Addr: sim.Addr(), SourceAddr: "Phonebook", ReconnectMin: 10 * time.Millisecond}}, h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	t.Cleanup(func() { r.Close() })
	poll.Until(t, "bind", func() bool { return r.States()[0].Bound })
	return sim, r
}

func TestPrintsReassembledSMS(t *testing.T) {
	var out syncBuffer
	sim, r := start(t, smscsim.Config{Output: &out}, nil)
	ctx := context.Background()
	for i, text := range []string{"Your code ", "is 123456"} {
		p := smsc.Part{Dest: "+8613800138000", ESMClass: 0x40, Payload: append([]byte{5, 0, 3, 42, 2, byte(i + 1)}, text...)}
		if _, err := r.Submit(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Submit(ctx, smsc.Part{Dest: "+8613800138000", DataCoding: 8, Payload: []byte{0x4F, 0x60, 0x59, 0x7D}}); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "printing", func() bool { return strings.Count(out.String(), "\n") == 2 })
	want := "smscsim: SMS to +8613800138000 from Phonebook: Your code is 123456\nsmscsim: SMS to +8613800138000 from Phonebook: 你好\n"
	if got := out.String(); got != want {
		t.Fatalf("printed %q, want %q", got, want)
	}
	subs := sim.Submits()
	if len(subs) != 3 || subs[0].Text != "Your code " || subs[2].Text != "你好" || subs[0].SystemID != "" {
		t.Fatalf("submits %+v", subs)
	}
}

func TestMessageIDStyles(t *testing.T) {
	for style, ok := range map[string]func(string) bool{
		"hex-upper": func(s string) bool { return strings.ToUpper(s) == s && strings.ContainsAny(s, "ABCDEF") },
		"hex-lower": func(s string) bool { return strings.ToLower(s) == s && strings.ContainsAny(s, "abcdef") },
		"decimal":   func(s string) bool { return len(s) == 12 && s[0] == '0' && strings.Trim(s, "0123456789") == "" },
	} {
		_, r := start(t, smscsim.Config{MessageIDStyle: style}, nil)
		res, err := r.Submit(context.Background(), smsc.Part{Dest: "+8613800138000", Payload: []byte("x")})
		if err != nil || !ok(res.MessageID) {
			t.Errorf("%s: id %q, %v", style, res.MessageID, err)
		}
	}
}

func TestHTTPControl(t *testing.T) {
	var got sync.Map
	h := func(_ context.Context, d smsc.Deliver) error {
		got.Store(string(d.Payload), d)
		return nil
	}
	sim, r := start(t, smscsim.Config{}, h)
	addr, err := sim.StartHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr
	call := func(method, path, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var v map[string]any
		json.Unmarshal(b, &v)
		if resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s %s: content type %q", method, path, resp.Header.Get("Content-Type"))
		}
		return resp.StatusCode, v
	}
	errCode := func(v map[string]any) any {
		e, _ := v["error"].(map[string]any)
		return e["code"]
	}
	if code, v := call("POST", "/mo", `{"from":"+8613900001111","to":"10690","text":"hello from http"}`); code != 200 {
		t.Fatalf("POST /mo: %d %v", code, v)
	}
	if _, ok := got.Load("hello from http"); !ok {
		t.Fatal("MO did not reach the handler")
	}
	for _, tc := range []struct{ method, path, body, code string }{
		{"POST", "/mo", `{"from":`, "invalid_json"},
		{"POST", "/mo", `{"from":"+1"}`, "invalid_request"},
		{"POST", "/mo", `{"from":"+1","to":"2","text":"x","extra":1}`, "invalid_json"},
		{"POST", "/throttle", `{"every":-1}`, "invalid_request"},
		{"POST", "/throttle", `{}`, "invalid_request"},
		{"GET", "/nowhere", ``, "not_found"},
	} {
		if code, v := call(tc.method, tc.path, tc.body); code/100 != 4 || errCode(v) != tc.code {
			t.Errorf("%s %s %s: %d %v; want code %s", tc.method, tc.path, tc.body, code, v, tc.code)
		}
	}
	if code, _ := call("POST", "/throttle", `{"every":1}`); code != 200 {
		t.Fatalf("POST /throttle: %d", code)
	}
	_, err = r.Submit(context.Background(), smsc.Part{Dest: "+8613800138000", Payload: []byte("x")})
	if se, ok := err.(*smsc.SubmitError); !ok || se.Status != 0x58 {
		t.Fatalf("after /throttle every 1: %v", err)
	}
	call("POST", "/throttle", `{"every":0}`)
	if _, err := r.Submit(context.Background(), smsc.Part{Dest: "+8613800138000", Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/submits")
	if err != nil {
		t.Fatal(err)
	}
	var subs []smscsim.Submit
	json.NewDecoder(resp.Body).Decode(&subs)
	resp.Body.Close()
	if len(subs) != 1 || subs[0].Text != "y" {
		t.Fatalf("GET /submits: %+v", subs)
	}
	if code, _ := call("POST", "/drop", ``); code != 200 {
		t.Fatalf("POST /drop: %d", code)
	}
	poll.Until(t, "a rebind after /drop", func() bool { return sim.Stats().Binds == 2 })

	// POST /faults: a TCP reset after every 2nd accepted submit (counted
	// per session: the rebound one has none yet), its response lost.
	if code, v := call("POST", "/faults", `{"reset_after":2}`); code != 200 || v["reset_after"] != float64(2) || v["receipt_before_resp"] != false {
		t.Fatalf("POST /faults: %d %v", code, v)
	}
	ctx := context.Background()
	if _, err := r.Submit(ctx, smsc.Part{Dest: "+8613800138000", Payload: []byte("f1")}); err != nil {
		t.Fatalf("first submit after reset_after 2: %v", err)
	}
	if _, err := r.Submit(ctx, smsc.Part{Dest: "+8613800138000", Payload: []byte("f2")}); err == nil {
		t.Fatal("the second submit was answered; reset_after 2 should have reset the session")
	}
	if code, v := call("GET", "/faults", ""); code != 200 || v["reset_after"] != float64(2) {
		t.Fatalf("GET /faults: %d %v", code, v)
	}
	call("POST", "/faults", `{"reset_after":0}`)
	poll.Until(t, "submits answered again after reset_after 0", func() bool {
		_, err := r.Submit(ctx, smsc.Part{Dest: "+8613800138000", Payload: []byte("f3")})
		return err == nil
	})
	for _, tc := range []struct{ body, code string }{{`{"reset_after":-1}`, "invalid_request"}, {`{"reset_every":1}`, "invalid_json"}} {
		if code, v := call("POST", "/faults", tc.body); code != 400 || errCode(v) != tc.code {
			t.Errorf("POST /faults %s: %d %v; want %s", tc.body, code, v, tc.code)
		}
	}
}

func TestMOWithoutReceiver(t *testing.T) {
	sim := smscsim.New(smscsim.Config{})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if err := sim.InjectMO(context.Background(), "+1", "2", "x"); err == nil {
		t.Fatal("no error without a bound receiver")
	}
}

func TestCommand(t *testing.T) {
	cmd := smscsim.Command()
	cmd.SetArgs([]string{"--receipt-stat", "LOST"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "LOST") {
		t.Fatalf("bad --receipt-stat: %v", err)
	}

	var out syncBuffer
	cmd = smscsim.Command()
	cmd.SetArgs([]string{"--addr", "127.0.0.1:0"})
	cmd.SetOut(&out)
	cmd.SetErr(io.Discard)
	cmd.SetIn(strings.NewReader("nonsense\n"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	poll.Until(t, "the banner and the stdin complaint", func() bool {
		s := out.String()
		return strings.Contains(s, "smscsim: SMPP on 127.0.0.1:") && strings.Contains(s, "want: MO <from> <to> <text>")
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestParseDelayRange(t *testing.T) {
	for _, tc := range []struct {
		in     string
		lo, hi time.Duration
		ok     bool
	}{
		{"0s", 0, 0, true},
		{"5ms", 5 * time.Millisecond, 5 * time.Millisecond, true},
		{"1ms-20ms", time.Millisecond, 20 * time.Millisecond, true},
		{" 2ms - 3ms ", 2 * time.Millisecond, 3 * time.Millisecond, true},
		{"20ms-1ms", 0, 0, false},
		{"5", 0, 0, false},
		{"", 0, 0, false},
		{"1ms-", 0, 0, false},
		{"fast", 0, 0, false},
	} {
		lo, hi, err := smscsim.ParseDelayRange(tc.in)
		if (err == nil) != tc.ok || tc.ok && (lo != tc.lo || hi != tc.hi) {
			t.Errorf("ParseDelayRange(%q) = %v, %v, %v; want %v, %v, ok %v", tc.in, lo, hi, err, tc.lo, tc.hi, tc.ok)
		}
	}
}

// TestRespDelayRange checks that every submit_sm_resp waits at least the
// lower bound, that responses are held side by side (the window is used),
// and that the HTTP API changes and reports the delay.
func TestRespDelayRange(t *testing.T) {
	sim, r := start(t, smscsim.Config{RespDelay: 40 * time.Millisecond, RespDelayMax: 80 * time.Millisecond}, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			t0 := time.Now()
			_, err := r.Submit(context.Background(), smsc.Part{Dest: "+8613800138000", Payload: []byte("x")})
			if err == nil && time.Since(t0) < 40*time.Millisecond {
				err = fmt.Errorf("answered after %s, before the 40ms lower bound", time.Since(t0))
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := sim.Stats().MaxOutstanding; got < 2 {
		t.Errorf("at most %d submit outstanding at the simulator; want the delayed responses held side by side", got)
	}

	addr, err := sim.StartHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	post := func(body string) (int, string) {
		resp, err := http.Post("http://"+addr+"/resp-delay", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`{"delay":"1ms-20ms"}`); code != 200 || !strings.Contains(body, `"1ms-20ms"`) {
		t.Fatalf("POST /resp-delay: %d %s", code, body)
	}
	if lo, hi := sim.RespDelay(); lo != time.Millisecond || hi != 20*time.Millisecond {
		t.Fatalf("after POST /resp-delay 1ms-20ms: %v-%v", lo, hi)
	}
	for _, body := range []string{`{}`, `{"delay":"soon"}`, `{"delay":"9ms-2ms"}`, `{"delay":5}`} {
		if code, resp := post(body); code != 400 || !strings.Contains(resp, `"code":"invalid_`) {
			t.Errorf("POST /resp-delay %s: %d %s; want 400 with an error code", body, code, resp)
		}
	}
	if lo, hi := sim.RespDelay(); lo != time.Millisecond || hi != 20*time.Millisecond {
		t.Fatalf("refused requests changed the delay to %v-%v", lo, hi)
	}

	cmd := smscsim.Command()
	cmd.SetArgs([]string{"--resp-delay", "3ms-1ms"})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--resp-delay") {
		t.Fatalf("bad --resp-delay: %v", err)
	}
}

// A reply goes to the source address of the last SMS the phone received,
// as a handset's "reply" does; a phone that received none gets an error
// (and 404 over HTTP).
func TestReplyToLastSource(t *testing.T) {
	got := make(chan smsc.Deliver, 4)
	sim, r := start(t, smscsim.Config{}, func(_ context.Context, d smsc.Deliver) error {
		if !d.IsReceipt() {
			got <- d
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, src := range []string{"106900007", "106900042"} {
		p := smsc.Part{Source: src, Dest: "+8613700137000", Payload: []byte("hello")}
		if _, err := r.Submit(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	to, err := sim.Reply(ctx, "+8613700137000", "ok")
	if err != nil || to != "106900042" {
		t.Fatalf("reply went to %q: %v", to, err)
	}
	select {
	case d := <-got:
		if d.DestAddr != "106900042" || d.SourceAddr != "8613700137000" || string(d.Payload) != "ok" {
			t.Fatalf("deliver_sm %+v", d)
		}
	case <-ctx.Done():
		t.Fatal("no MO")
	}
	if _, err := sim.Reply(ctx, "+8613900139000", "hi"); err == nil {
		t.Fatal("a reply from a phone that received nothing was sent")
	}
	srv := httptest.NewServer(sim.Handler())
	defer srv.Close()
	res, err := http.Post(srv.URL+"/reply", "application/json", strings.NewReader(`{"from":"+8613900139000","text":"hi"}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNotFound {
		t.Fatalf("POST /reply from a phone that received nothing: %d", res.StatusCode)
	}
}
