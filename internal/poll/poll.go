// Package poll waits for conditions in tests: poll, never sleep-and-hope.
// Every package's tests use it rather than a copy of their own.
package poll

import (
	"testing"
	"time"
)

// Patience is how long Until waits. It only matters when a test is about
// to fail, so it is generous: the suite runs with -race on shared 2-core
// machines, and a cluster failover takes seconds.
const Patience = 30 * time.Second

// Until polls cond every 5ms and fails t when it has not held within
// Patience; what names the condition in the failure.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Patience, what, cond)
}

// Within is Until with a patience of its own, for the few waits that are
// slow by nature (a JetStream cluster electing new Raft leaders after a
// server died takes 5 to 25 s even on a quiet machine).
func Within(t testing.TB, patience time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", patience, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Next receives a value from ch and fails t when ch is closed or nothing
// arrives within Patience; what names the value in the failure.
func Next[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-time.After(Patience):
		t.Fatalf("timed out after %v waiting for %s", Patience, what)
	}
	panic("unreachable")
}
