package bench

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
)

// BenchmarkStoreOffline: 50 senders, 64 messages in flight each, to 1,000
// users who are not connected, so that every message goes through the
// offline store's group commit (and its per-sender and per-recipient caps,
// counted once per batch). It reports stored messages per second.
//
//	go test -run '^$' -bench StoreOffline -benchtime 100000x ./relay/bench
func BenchmarkStoreOffline(b *testing.B) {
	const senders, recipients, window = 50, 1000, 64
	n := max(b.N, 5000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, addr, stop, err := Server(ctx, recipients+senders, relayConfigForStore(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer stop()
	clients := make([]*client.Client, senders)
	for i := range clients {
		c, err := client.Dial(ctx, addr, client.Options{Token: Token(recipients + i)})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		clients[i] = c
	}
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i, c := range clients {
		wg.Go(func() {
			sem := make(chan struct{}, window)
			var inner sync.WaitGroup
			for k := i; k < n; k += senders {
				sem <- struct{}{}
				p, err := c.Send(string(Number(k%recipients)), "a message for someone offline, about a hundred bytes long, give or take a few")
				if err != nil {
					errs <- err
					return
				}
				inner.Go(func() {
					defer func() { <-sem }()
					r, err := p.Wait(ctx)
					if err == nil && r.State != relaypb.MessageState_STORED {
						err = fmt.Errorf("state %s: %v", r.State, r.Error)
					}
					if err != nil {
						select {
						case errs <- err:
						default:
						}
					}
				})
			}
			inner.Wait()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "stored/s")
}

// relayConfigForStore keeps the defaults but the rate limit (lifted by
// Server) and the per-sender cap, which the benchmark's senders would
// reach.
func relayConfigForStore() relay.Config {
	return relay.Config{MaxOfflinePerSender: 1 << 30, MaxOfflinePerRecipient: 1 << 30}
}
