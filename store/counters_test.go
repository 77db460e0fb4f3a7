package store_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// 200 concurrent reservations against a limit of 10: at most 10 see a
// count within the limit, whatever the interleaving (fewer when increments
// overtake reads: a limit fails closed), and one at a time exactly 10 do.
// Releasing takes reservations back.
func TestReserveConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		const limit, attackers = 10, 200
		var admitted atomic.Int64
		var mu sync.Mutex
		var held []store.Reservation
		var wg sync.WaitGroup
		for range attackers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r, err := db.Reserve(ctx, "test:reserve", time.Hour)
				if err != nil {
					t.Error(err)
					return
				}
				if r.Count <= limit {
					admitted.Add(1)
					mu.Lock()
					held = append(held, r)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if got := admitted.Load(); got > limit {
			t.Fatalf("%d of %d concurrent reservations were within the limit of %d", got, attackers, limit)
		}
		n, _, err := db.Count(ctx, "test:reserve", time.Hour)
		if err != nil || n != attackers {
			t.Fatalf("count = %d, %v; want %d", n, err, attackers)
		}
		for _, r := range held {
			if err := db.Release(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if n, _, _ := db.Count(ctx, "test:reserve", time.Hour); n != attackers-int64(len(held)) {
			t.Fatalf("after releasing %d: count = %d, want %d", len(held), n, attackers-len(held))
		}
		within := 0
		for range 2 * limit {
			r, err := db.Reserve(ctx, "test:sequential", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if r.Count <= limit {
				within++
			}
		}
		if within != limit {
			t.Fatalf("one at a time, %d of %d reservations were within the limit of %d", within, 2*limit, limit)
		}
		// A release never takes a shard below zero (one released twice).
		r, err := db.Reserve(ctx, "test:reserve2", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		db.Release(ctx, r)
		db.Release(ctx, r)
		if n, _, _ := db.Count(ctx, "test:reserve2", time.Hour); n != 0 {
			t.Fatalf("double release: count = %d, want 0", n)
		}
	})
}
