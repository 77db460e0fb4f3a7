package cluster

import (
	"log/slog"
	"sync"
	"time"
)

// logLimiter keeps the warnings a partition repeats (every reconnect
// attempt, every watcher restart, every push that cannot be sent) from
// flooding the log: the first of a kind is logged at once, later ones at
// most once per interval, with how many were left out meanwhile.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	seen  map[string]*logSeen
}

type logSeen struct {
	at         time.Time
	suppressed int
}

// maxLogKeys bounds the limiter's memory should keys vary (they are error
// texts): past it, the table starts over.
const maxLogKeys = 256

func newLogLimiter(every time.Duration) *logLimiter {
	return &logLimiter{every: every, seen: make(map[string]*logSeen)}
}

// warn logs msg unless the same key was logged less than the interval
// ago.
func (l *logLimiter) warn(log *slog.Logger, key, msg string, args ...any) {
	now := time.Now()
	l.mu.Lock()
	s := l.seen[key]
	if s != nil && now.Sub(s.at) < l.every {
		s.suppressed++
		l.mu.Unlock()
		return
	}
	if s == nil {
		if len(l.seen) >= maxLogKeys {
			clear(l.seen)
		}
		s = &logSeen{}
		l.seen[key] = s
	}
	n := s.suppressed
	s.at, s.suppressed = now, 0
	l.mu.Unlock()
	if n > 0 {
		args = append(args, "repeats_not_logged", n)
	}
	log.Warn(msg, args...)
}
