package relay

import (
	"time"

	"github.com/phonebook/phonebook"
)

// storedRecheckBatch is how many recipients one store query looks at.
const storedRecheckBatch = 200

// storedRecheckLoop wakes, every StoredRecheck, the live sessions that have
// messages waiting in the offline store. A message stored for a connected
// recipient is normally delivered at once: whoever stored it wakes the
// recipient's session, through NATS when it is on another node. That wake-up
// is fire-and-forget; it is lost when the recipient's node is cut off, or
// while its subscription moves to another NATS server after the death of
// its own. This loop bounds how long such a message waits: StoredRecheck,
// whatever was lost. It costs one indexed query per 200 live sessions.
func (srv *Server) storedRecheckLoop() {
	defer srv.bg.Done()
	t := time.NewTicker(srv.cfg.StoredRecheck)
	defer t.Stop()
	for {
		select {
		case <-srv.quitBG:
			return
		case <-t.C:
			srv.recheckStored()
		}
	}
}

// recheckStored wakes every live session whose number has stored messages.
func (srv *Server) recheckStored() {
	srv.mu.Lock()
	byNumber := make(map[phonebook.MSISDN][]*session, len(srv.sessions))
	for s := range srv.sessions {
		if s.number != "" {
			byNumber[s.number] = append(byNumber[s.number], s)
		}
	}
	srv.mu.Unlock()
	numbers := make([]phonebook.MSISDN, 0, len(byNumber))
	for n := range byNumber {
		numbers = append(numbers, n)
	}
	for len(numbers) > 0 {
		batch := numbers[:min(len(numbers), storedRecheckBatch)]
		numbers = numbers[len(batch):]
		_, waiting, err := srv.store.OfflineCounts(srv.ctx, nil, batch)
		if err != nil {
			if srv.ctx.Err() == nil {
				srv.log.Warn("relay: look for stored messages of live sessions", "sessions", len(batch), "err", err)
			}
			return
		}
		for n := range waiting {
			for _, s := range byNumber[n] {
				srv.metrics.storedRechecked.Inc()
				s.Wake()
			}
		}
	}
}
