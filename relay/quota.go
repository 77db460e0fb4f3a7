package relay

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// keyedLimiter is a token bucket per key (a sender, a client address),
// created on first use and forgotten once full again.
type keyedLimiter[K comparable] struct {
	mu    sync.Mutex
	m     map[K]*rate.Limiter
	limit rate.Limit
	burst int
}

func newKeyedLimiter[K comparable](limit rate.Limit, burst int) *keyedLimiter[K] {
	return &keyedLimiter[K]{m: make(map[K]*rate.Limiter), limit: limit, burst: max(1, burst)}
}

// newAuthFailures limits failed relay logins per client address: each
// costs the accounts store a lookup.
func newAuthFailures(perMinute int) *keyedLimiter[netip.Addr] {
	return newKeyedLimiter[netip.Addr](rate.Limit(float64(perMinute)/60), perMinute)
}

// allow takes a token from k's bucket; false when it is empty.
func (q *keyedLimiter[K]) allow(k K, now time.Time) bool {
	return q.get(k).AllowN(now, 1)
}

// get returns k's bucket, which the caller may keep: a user's sessions
// share one, so reconnecting does not refill it.
func (q *keyedLimiter[K]) get(k K) *rate.Limiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.m[k]
	if l == nil {
		l = rate.NewLimiter(q.limit, q.burst)
		q.m[k] = l
	}
	return l
}

// empty reports whether k's bucket has no token left, without taking one.
func (q *keyedLimiter[K]) empty(k K, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.m[k]
	return l != nil && l.TokensAt(now) < 1
}

// refill is how long a bucket takes to earn one token back.
func (q *keyedLimiter[K]) refill() time.Duration {
	return time.Duration(float64(time.Second) / float64(q.limit))
}

// prune forgets keys whose bucket has refilled: a new bucket is the same.
func (q *keyedLimiter[K]) prune(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, l := range q.m {
		if l.TokensAt(now) >= float64(q.burst) {
			delete(q.m, k)
		}
	}
}
