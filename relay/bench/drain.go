package bench

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store"
)

// DrainResult is what Drain measured.
type DrainResult struct {
	Users     int
	Messages  int
	Stored    time.Duration // time to store the backlog (not part of the drain)
	Elapsed   time.Duration // from the first login until every message was received and acknowledged
	PerSecond float64
}

func (r DrainResult) String() string {
	return fmt.Sprintf("%d stored messages to %d users delivered in %s after login (%.0f msg/s); storing took %s",
		r.Messages, r.Users, r.Elapsed.Round(time.Millisecond), r.PerSecond, r.Stored.Round(time.Millisecond))
}

// Drain stores messages for users recipients in the offline store, then
// logs every recipient in at once (64 logins in flight) and measures until
// every message has reached its client, which acknowledges it on receipt.
func Drain(ctx context.Context, users, messages int, db *store.DB, cfg relay.Config) (DrainResult, error) {
	if db == nil {
		return DrainResult{}, fmt.Errorf("bench: Drain needs a store it can seed")
	}
	_, addr, stop, err := Server(ctx, users+1, cfg, db)
	if err != nil {
		return DrainResult{}, err
	}
	defer stop()
	// Storing through a sender's session is the realistic path but slow to
	// set up for 100,000 messages; the store's batch insert is what the
	// relay's group commit calls, so the rows are the same.
	text := strings.Repeat("x", 100)
	t0 := time.Now()
	const batch = 1000
	for off := 0; off < messages; off += batch {
		n := min(batch, messages-off)
		msgs := make([]store.Message, n)
		for i := range msgs {
			k := off + i
			msgs[i] = store.Message{ID: fmt.Sprintf("drain-%d", k), Sender: Number(users), ClientMsgID: fmt.Sprintf("d%d", k),
				Recipient: Number(k % users), Type: 1, Text: text, SentAt: time.Now()}
		}
		if _, err := db.StoreMessages(ctx, msgs); err != nil {
			return DrainResult{}, err
		}
	}
	res := DrainResult{Users: users, Messages: messages, Stored: time.Since(t0)}

	var got atomic.Int64
	all := make(chan struct{})
	var once sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, users)
	sem := make(chan struct{}, 64) // logins in flight at once
	for i := range users {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			c, err := client.Dial(ctx, addr, client.Options{Token: Token(i), AutoAck: true, Buffer: 1024})
			<-sem
			if err != nil {
				errs <- err
				return
			}
			go func() {
				for range c.Deliveries() {
					if got.Add(1) == int64(messages) {
						once.Do(func() { close(all) })
					}
				}
			}()
			select {
			case <-all:
			case <-ctx.Done():
			}
			c.Close()
		}()
	}
	select {
	case <-all:
	case err := <-errs:
		return res, err
	case <-ctx.Done():
		return res, fmt.Errorf("bench: drain: %d of %d delivered: %w", got.Load(), messages, ctx.Err())
	}
	res.Elapsed = time.Since(start)
	res.PerSecond = float64(messages) / res.Elapsed.Seconds()
	wg.Wait()
	return res, nil
}
