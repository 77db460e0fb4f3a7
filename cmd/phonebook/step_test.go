package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// stepPatience bounds one step of an end-to-end test: one request, one
// wait for an SMS, a receipt, a line of output or a child server's start.
// Like poll.Patience it only matters when the test is about to fail, so it
// is generous: the suite runs with -race on a shared 2-core machine, where
// a step that takes milliseconds alone can take a minute. Each step gets
// its own; a test's context (t.Context()) has no deadline, so a slow early
// step never eats the time of a later one.
const stepPatience = 5 * time.Minute

// step returns ctx bounded for one step; its timer ends with the test.
func step(t testing.TB, ctx context.Context) context.Context {
	ctx, cancel := context.WithTimeout(ctx, stepPatience)
	t.Cleanup(cancel)
	return ctx
}

// phoneUntil runs `phonebook phone ARGS... --wait 1h` against m until its
// output holds want, then stops it and returns the output: a receipt is
// waited for as one step, never for a fixed --wait.
func phoneUntil(t *testing.T, m *Main, state, want string, args ...string) string {
	t.Helper()
	var out lockedBuffer
	ctx, stop := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runPhone(t, ctx, m, state, &out, append(args, "--wait", "1h")...) }()
	waitCtx := step(t, t.Context())
	for !strings.Contains(out.String(), want) {
		select {
		case err := <-done:
			t.Fatalf("phone %v ended without %q: %v\n%s", args, want, err, out.String())
		case <-waitCtx.Done():
			stop()
			<-done
			t.Fatalf("phone %v: output never held %q:\n%s", args, want, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("phone %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}
