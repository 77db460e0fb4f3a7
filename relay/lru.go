package relay

import (
	"container/list"
	"net/netip"
	"time"

	"golang.org/x/time/rate"
)

// limiterLRU holds the per-network rate limiters of unauthenticated UDP
// datagrams. It is bounded: when full, the least recently used network's
// limiter is dropped (that network alone starts again with a full burst),
// so a flood of new addresses cannot reset the buckets of the networks
// that are sending now. Not safe for concurrent use (the UDP reader owns it).
type limiterLRU struct {
	max   int
	limit rate.Limit
	burst int
	order *list.List // front: most recently used; values are *lruEntry
	m     map[netip.Prefix]*list.Element
}

type lruEntry struct {
	key netip.Prefix
	l   *rate.Limiter
}

func newLimiterLRU(max int, limit rate.Limit, burst int) *limiterLRU {
	return &limiterLRU{max: max, limit: limit, burst: burst, order: list.New(), m: make(map[netip.Prefix]*list.Element, max)}
}

// allow takes a token from k's bucket.
func (c *limiterLRU) allow(k netip.Prefix, now time.Time) bool {
	if e, ok := c.m[k]; ok {
		c.order.MoveToFront(e)
		return e.Value.(*lruEntry).l.AllowN(now, 1)
	}
	var ent *lruEntry
	if c.order.Len() >= c.max {
		// Reuse the oldest entry for the new network.
		e := c.order.Back()
		ent = e.Value.(*lruEntry)
		delete(c.m, ent.key)
		c.order.Remove(e)
		ent.key = k
		ent.l = rate.NewLimiter(c.limit, c.burst)
	} else {
		ent = &lruEntry{key: k, l: rate.NewLimiter(c.limit, c.burst)}
	}
	c.m[k] = c.order.PushFront(ent)
	return ent.l.AllowN(now, 1)
}

func (c *limiterLRU) len() int { return c.order.Len() }
