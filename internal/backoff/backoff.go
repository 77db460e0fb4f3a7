// Package backoff computes retry delays for the durable outboxes (SMS and
// MMS): exponential from a base, capped, with "equal jitter" (half the
// delay fixed, half random) so that a burst of failures does not come back
// as one burst.
package backoff

import (
	"crypto/rand"
	"math/big"
	"time"
)

// Equal is the wait before the next try after attempts failed ones: base
// doubled per attempt after the first, at most max, then jittered into
// [d/2, d].
func Equal(base, max time.Duration, attempts int) time.Duration {
	d := base
	for i := 1; i < attempts && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := int64(d / 2)
	n, err := rand.Int(rand.Reader, big.NewInt(half+1))
	if err != nil {
		return d
	}
	return time.Duration(half + n.Int64())
}
