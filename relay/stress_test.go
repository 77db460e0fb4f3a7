package relay_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// TestChurnLosesNothingAcknowledged has users send to each other while
// connections drop, replace each other and stall, with small queues and
// short ack timeouts; every message that got a SendResult other than FAILED
// must reach its recipient.
func TestChurnLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("stress")
	}
	cfg := testConfig()
	cfg.SendQueue = 32
	cfg.AckTimeout = 200 * time.Millisecond
	e := start(t, cfg, nil)
	const users, rounds, perRound = 6, 6, 40
	num := func(i int) phonebook.MSISDN { return phonebook.MSISDN(fmt.Sprintf("+86135001350%02d", i)) }
	tok := func(i int) string { return fmt.Sprintf("tok-churn%d", i) }
	for i := range users {
		e.auth.add(tok(i), num(i), "dev")
	}
	var mu sync.Mutex
	acked := map[string]phonebook.MSISDN{} // server_msg_id -> recipient
	got := map[phonebook.MSISDN]map[string]bool{}
	for i := range users {
		got[num(i)] = map[string]bool{}
	}
	receive := func(c *client.Client, me phonebook.MSISDN, ackEvery int) {
		k := 0
		for d := range c.Deliveries() {
			k++
			if ackEvery > 0 && k%ackEvery == 0 {
				continue // "forget" to acknowledge some
			}
			mu.Lock()
			got[me][d.ServerMsgId] = true
			mu.Unlock()
			c.Ack(d.ServerMsgId)
		}
	}
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(round), uint64(i)))
				c := e.dial(tok(i), "dev", client.Options{Buffer: 8})
				go receive(c, num(i), 1+r.IntN(5))
				type sent struct {
					p  *client.Pending
					to phonebook.MSISDN
				}
				var pend []sent
				for k := range perRound {
					to := num(r.IntN(users))
					p, err := c.SendMsg(&relaypb.Send{ClientMsgId: fmt.Sprintf("r%d-%d", round, k), To: string(to), Text: "churn"})
					if err != nil {
						return // connection lost: the unanswered are not promised
					}
					pend = append(pend, sent{p, to})
					if r.IntN(perRound) == 0 {
						c.Close() // drop mid-stream
						break
					}
				}
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				for _, s := range pend {
					res, err := s.p.Wait(ctx)
					if err != nil || res.State == relaypb.MessageState_FAILED {
						continue
					}
					mu.Lock()
					acked[res.ServerMsgId] = s.to
					mu.Unlock()
				}
				c.Close()
			}()
		}
		wg.Wait()
	}
	t.Logf("%d messages acknowledged", len(acked))
	// Everyone comes back and acknowledges everything.
	for i := range users {
		c := e.dial(tok(i), "dev", client.Options{AutoAck: true, Buffer: 4096})
		me := num(i)
		go func() {
			for d := range c.Deliveries() {
				mu.Lock()
				got[me][d.ServerMsgId] = true
				mu.Unlock()
			}
		}()
	}
	waitFor(t, "every acknowledged message delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for id, to := range acked {
			if !got[to][id] {
				return false
			}
		}
		return true
	})
}
