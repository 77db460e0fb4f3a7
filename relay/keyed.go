package relay

import (
	"context"
	"sync"
)

// keyedMutex is a lock per key, for keys that are few at a time (message
// ids in flight); the zero value is ready.
type keyedMutex struct {
	mu   sync.Mutex
	held map[string]chan struct{}
}

// lock waits until key is free or ctx ends, then holds it; unlock frees it.
func (k *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		k.mu.Lock()
		if k.held == nil {
			k.held = map[string]chan struct{}{}
		}
		busy, ok := k.held[key]
		if !ok {
			done := make(chan struct{})
			k.held[key] = done
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.held, key)
				k.mu.Unlock()
				close(done)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// wait returns once key is not held (or ctx ended), without taking it.
func (k *keyedMutex) wait(ctx context.Context, key string) {
	k.mu.Lock()
	busy, ok := k.held[key]
	k.mu.Unlock()
	if !ok {
		return
	}
	select {
	case <-busy:
	case <-ctx.Done():
	}
}
