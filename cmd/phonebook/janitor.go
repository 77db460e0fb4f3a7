package main

import (
	"context"
	"time"
)

// startJanitor applies the store's retention policy (store.DeleteExpired)
// at start and every hour. Every node may run it; the deletes are
// idempotent.
func (m *Main) startJanitor(ctx context.Context) {
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			if _, err := m.DB.DeleteExpired(ctx, time.Now()); err != nil && ctx.Err() == nil {
				m.log.Warn("janitor", "err", err)
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
