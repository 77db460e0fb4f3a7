package relay

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/phonebook/phonebook"
)

// smsQuota limits SMS fallbacks per sender: an IM message to a stranger's
// number costs an SMS, so a user (or a stolen token) must not be able to
// turn the relay into an SMS cannon.
type smsQuota struct {
	mu    sync.Mutex
	m     map[phonebook.MSISDN]*rate.Limiter
	limit rate.Limit
	burst int
}

func newSMSQuota(perHour int) *smsQuota {
	return &smsQuota{m: make(map[phonebook.MSISDN]*rate.Limiter), limit: rate.Limit(float64(perHour) / 3600), burst: max(1, perHour/6)}
}

func (q *smsQuota) allow(sender phonebook.MSISDN, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.m[sender]
	if l == nil {
		l = rate.NewLimiter(q.limit, q.burst)
		q.m[sender] = l
	}
	return l.AllowN(now, 1)
}

// prune forgets senders whose bucket has refilled: a new bucket is the same.
func (q *smsQuota) prune(now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for n, l := range q.m {
		if l.TokensAt(now) >= float64(q.burst) {
			delete(q.m, n)
		}
	}
}
