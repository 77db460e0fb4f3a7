package accounts

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/argon2"

	"github.com/phonebook/phonebook"
)

// Rescue passwords are chosen by people, so they get a slow, memory-hard
// hash: argon2id with OWASP's minimum parameters (19 MiB, 2 passes). The
// parameters are stored with the hash so they can be raised later.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

func hashPassword(pw string) string {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	key := argon2.IDKey([]byte(pw), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
}

func checkPassword(pw, encoded string) bool {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m > 1<<20 || t > 16 || p == 0 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// hashGate bounds the rescue-password hashes computed at once. argon2id
// takes 19 MiB per hash, so unbounded, 2,000 guesses arriving together
// would need 38 GB. A check waits for one of slots; at most queue checks
// wait, and one more is refused at once with rate_limited: memory is
// bounded by slots, waiting goroutines by queue.
type hashGate struct {
	slots   chan struct{}
	waiting atomic.Int64
	queue   int64

	inFlight atomic.Int64
	peak     atomic.Int64
	count    atomic.Uint64
	checks   prometheus.Counter
	refused  prometheus.Counter
}

func newHashGate(slots, queue int) *hashGate {
	return &hashGate{slots: make(chan struct{}, slots), queue: int64(queue),
		checks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phonebook_rescue_password_checks_total", Help: "Rescue passwords hashed and compared (argon2id).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phonebook_rescue_password_checks_refused_total", Help: "Rescue-password checks refused because every hash slot and queue place was taken.",
		}),
	}
}

// check compares pw with the encoded hash once a slot is free.
func (g *hashGate) check(ctx context.Context, pw, encoded string) (bool, error) {
	select {
	case g.slots <- struct{}{}:
	default:
		if g.waiting.Add(1) > g.queue {
			g.waiting.Add(-1)
			g.refused.Inc()
			return false, &phonebook.Error{Code: phonebook.ERateLimited, RetryAfter: time.Now().Add(time.Second),
				Message: "too many rescue passwords are being checked right now; retry in a second"}
		}
		select {
		case g.slots <- struct{}{}:
			g.waiting.Add(-1)
		case <-ctx.Done():
			g.waiting.Add(-1)
			return false, ctx.Err()
		}
	}
	defer func() { <-g.slots }()
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	g.count.Add(1)
	g.checks.Inc()
	return checkPassword(pw, encoded), nil
}

// HashStats reports how many rescue passwords were hashed and compared, and
// the most hashes that ran at once, since the service started.
func (s *Service) HashStats() (checks uint64, peak int) {
	return s.hashes.count.Load(), int(s.hashes.peak.Load())
}
