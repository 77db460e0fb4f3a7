package main

import (
	"context"
	"time"
)

// startJanitor removes what has expired: sessions, verification codes and
// tokens, and rate-limit counters of past windows. Every node may run it;
// the deletes are idempotent.
func (m *Main) startJanitor(ctx context.Context) {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			now := time.Now()
			if _, err := m.DB.DeleteExpiredSessions(ctx, now); err != nil && ctx.Err() == nil {
				m.log.Warn("janitor: sessions", "err", err)
			}
			if err := m.DB.DeleteExpiredVerifications(ctx, now); err != nil && ctx.Err() == nil {
				m.log.Warn("janitor: verifications", "err", err)
			}
			// The longest window is a day: anything older than two is dead.
			if _, err := m.DB.PurgeCounters(ctx, now.Add(-48*time.Hour)); err != nil && ctx.Err() == nil {
				m.log.Warn("janitor: counters", "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	m.closers = append(m.closers, func(context.Context) error { stop(); <-done; return nil })
}
