package smscsim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/internal/poll"
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
