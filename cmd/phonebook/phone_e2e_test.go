package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// phoneRun runs `phonebook phone ARGS...` against m with the given state
// file and standard input, to its end.
func phoneRun(t *testing.T, m *Main, state, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx := step(t, t.Context())
	c := newRootCmd()
	var out lockedBuffer
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetIn(strings.NewReader(stdin))
	// Flags given in args come later and win.
	c.SetArgs(append([]string{"phone", "--state", state, "--server", "http://" + m.HTTPAddr(), "--relay", m.RelayAddr()}, args...))
	err := c.ExecuteContext(ctx)
	if ctx.Err() != nil {
		t.Fatalf("phone %v did not end:\n%s", args, out.String())
	}
	return out.String(), err
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return 1
}

// `phone send` prints the server's reason when a message is refused, and
// each outcome has its documented exit status.
func TestPhoneSendOutcomesAndExitCodes(t *testing.T) {
	m := startMain(t, testConfig(t))
	dir := t.TempDir()
	alice, bob := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json")
	for _, r := range []struct{ state, number string }{{alice, "13600136000"}, {bob, "13500135000"}} {
		if out, err := phoneRun(t, m, r.state, "", "register", r.number, "--method", "header"); err != nil {
			t.Fatalf("register: %v\n%s", err, out)
		}
	}
	big := strings.Repeat("x", testConfig(t).Relay.MaxTextBytes+1)
	for _, tc := range []struct {
		name  string
		state string
		args  []string
		code  int
		want  string
	}{
		{"stored for an offline user", alice, []string{"send", "13500135000", "hello", "--wait", "0s"}, 0, "-> 13500135000: stored"},
		{"too large", alice, []string{"send", "13500135000", big, "--wait", "0s"}, exitRefused, "-> 13500135000: request_too_large: text is"},
		{"not a number", alice, []string{"send", "12", "hi", "--wait", "0s"}, exitRefused, "not sent"},
		{"no answer in time", alice, []string{"send", "13500135000", "hi", "--timeout", "1ns", "--wait", "0s"}, exitNoAnswer, "may or may not have been accepted"},
		{"login refused", filepath.Join(dir, "forged.json"), []string{"send", "13500135000", "hi"}, exitRefusedLogin, "login:"},
		{"relay unreachable", alice, []string{"send", "13500135000", "hi", "--relay", "127.0.0.1:1"}, 1, "relay 127.0.0.1:1"},
		{"no state file", filepath.Join(dir, "none.json"), []string{"send", "13500135000", "hi"}, 1, "run `phonebook phone register` first"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "login refused" {
				b, _ := os.ReadFile(alice)
				os.WriteFile(tc.state, []byte(strings.Replace(string(b), `"device_key": "`, `"device_key": "forged`, 1)), 0o600)
			}
			out, err := phoneRun(t, m, tc.state, "", tc.args...)
			all := out
			if err != nil {
				all += err.Error()
			}
			if code := exitCode(err); code != tc.code || !strings.Contains(all, tc.want) {
				t.Fatalf("exit %d, want %d; output %q (err %v), want it to contain %q", code, tc.code, out, err, tc.want)
			}
		})
	}
}

// `phone chat` applies piped lines one at a time, in order, and ends at
// the end of its input once every answer came.
func TestPhoneChatPipedInOrderEndsAtEOF(t *testing.T) {
	m := startMain(t, testConfig(t))
	dir := t.TempDir()
	alice := filepath.Join(dir, "alice.json")
	if out, err := phoneRun(t, m, alice, "", "register", "13600136000", "--method", "header"); err != nil {
		t.Fatalf("register: %v\n%s", err, out)
	}
	var in strings.Builder
	for _, s := range []string{"one", "two", "three", "four", "five", "six"} {
		in.WriteString("/status " + s + "\n13500135000 message " + s + "\n")
	}
	out, err := phoneRun(t, m, alice, in.String(), "chat")
	if err != nil {
		t.Fatalf("chat: %v\n%s", err, out)
	}
	last := -1
	for _, s := range []string{"one", "two", "three", "four", "five", "six"} {
		i := strings.Index(out, `you are online "`+s+`"`)
		if i < last {
			t.Fatalf("status %q applied out of order:\n%s", s, out)
		}
		last = i
	}
	if n := strings.Count(out, "-> 13500135000: "); n != 6 {
		t.Fatalf("%d send results, want 6:\n%s", n, out)
	}
	// The last status written is the one in force.
	out, err = phoneRun(t, m, alice, "", "status")
	if err != nil || !strings.Contains(out, `online "six"`) {
		t.Fatalf("status after the chat: %v\n%s", err, out)
	}
}
