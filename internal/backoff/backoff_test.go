package backoff

import (
	"testing"
	"time"
)

func TestEqual(t *testing.T) {
	for _, c := range []struct {
		attempts int
		lo, hi   time.Duration
	}{
		{1, time.Second, 2 * time.Second},
		{2, 2 * time.Second, 4 * time.Second},
		{4, 8 * time.Second, 16 * time.Second},
		{20, 30 * time.Second, time.Minute}, // capped
		{0, time.Second, 2 * time.Second},
	} {
		seen := map[time.Duration]bool{}
		for range 200 {
			d := Equal(2*time.Second, time.Minute, c.attempts)
			if d < c.lo || d > c.hi {
				t.Fatalf("attempts %d: %v outside [%v, %v]", c.attempts, d, c.lo, c.hi)
			}
			seen[d] = true
		}
		if len(seen) < 2 {
			t.Errorf("attempts %d: no jitter", c.attempts)
		}
	}
}
