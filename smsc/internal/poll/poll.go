// Package poll waits for conditions in tests: poll, never sleep-and-hope.
package poll

import (
	"testing"
	"time"
)

// Until polls cond every 5ms and fails t when it has not held within 10s.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
