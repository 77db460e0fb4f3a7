package relay

import (
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

// recorder writes chat records of online deliveries and applies offline
// acknowledgements in batches, off the delivery path.
type recorder struct {
	srv  *Server
	recs []store.ChatRecord // flush's, kept between batches
	ch   chan recItem
	quit chan struct{}
	done chan struct{}
}

type recItem struct {
	rec   store.ChatRecord // when ackID is ""
	ackBy phonebook.MSISDN
	ackID string
	at    time.Time
}

func newRecorder(srv *Server) *recorder {
	r := &recorder{srv: srv, ch: make(chan recItem, 32768), quit: make(chan struct{}), done: make(chan struct{})}
	go r.loop()
	return r
}

func (r *recorder) record(rec store.ChatRecord) { r.ch <- recItem{rec: rec} }

func (r *recorder) ack(s *session, id string, at time.Time) {
	r.ch <- recItem{ackBy: s.number, ackID: id, at: at}
}

func (r *recorder) stop() {
	close(r.quit)
	<-r.done
}

func (r *recorder) loop() {
	defer close(r.done)
	batch := make([]recItem, 0, 16384)
	for {
		select {
		case it := <-r.ch:
			batch = r.linger(append(batch[:0], it))
			r.flush(batch)
		case <-r.quit:
			for {
				if batch = gather(r.ch, batch[:0]); len(batch) == 0 {
					return
				}
				r.flush(batch)
			}
		}
	}
}

// recordLinger is how long the recorder lets a batch fill before writing
// it. Chat records are history, not delivery (the message has reached its
// recipient already), so a quarter second of delay is cheap, and it buys a
// lot: each record lands on a random leaf page of the chat table's indexes
// (by sender, by receiver), every dirty page is written to the WAL once per
// transaction, and a batch of thousands of records shares those pages. At
// 1,000 pairs this took the relay from about 45,000 to about 76,000 msg/s.
// A crash loses at most this much history, never a message.
const recordLinger = 250 * time.Millisecond

// linger fills batch from r.ch until it is full, recordLinger has passed,
// or the server is stopping.
func (r *recorder) linger(batch []recItem) []recItem {
	batch = gather(r.ch, batch)
	if len(batch) == cap(batch) {
		return batch
	}
	t := time.NewTimer(recordLinger)
	defer t.Stop()
	for len(batch) < cap(batch) {
		select {
		case it := <-r.ch:
			batch = gather(r.ch, append(batch, it))
		case <-t.C:
			return batch
		case <-r.quit:
			return batch
		}
	}
	return batch
}

// gather appends what is waiting in ch to batch, up to its capacity,
// without blocking: a batch is whatever queued while the last one was
// being written.
func gather[T any](ch <-chan T, batch []T) []T {
	for len(batch) < cap(batch) {
		select {
		case v := <-ch:
			batch = append(batch, v)
		default:
			return batch
		}
	}
	return batch
}

func (r *recorder) flush(batch []recItem) {
	srv := r.srv
	recs := r.recs[:0]
	var acks map[phonebook.MSISDN][]string
	var ackAt time.Time
	for _, it := range batch {
		if it.ackID == "" {
			recs = append(recs, it.rec)
		} else {
			if acks == nil {
				acks = make(map[phonebook.MSISDN][]string)
			}
			acks[it.ackBy] = append(acks[it.ackBy], it.ackID)
			ackAt = it.at
		}
	}
	defer func() {
		clear(recs) // drop the strings; keep the array for the next batch
		r.recs = recs[:0]
	}()
	if len(recs) > 0 {
		var err error
		for attempt := 0; attempt < 3; attempt++ {
			if err = srv.store.RecordMessages(srv.ctx, recs); err == nil {
				break
			}
			time.Sleep(time.Duration(attempt+1) * 100 * time.Millisecond)
		}
		if err != nil {
			// The messages were delivered; only their history is missing.
			srv.log.Error("relay: write chat records", "count", len(recs), "err", err)
		}
	}
	for number, ids := range acks {
		acked, err := srv.store.AckMessages(srv.ctx, number, ids, ackAt)
		if err != nil {
			// They stay stored and are delivered again at the next login;
			// the client drops them by server_msg_id.
			srv.log.Warn("relay: acknowledge offline messages", "number", number, "count", len(ids), "err", err)
			continue
		}
		for _, a := range acked {
			srv.receipt(a.Sender, a.ID, a.ClientMsgID, relaypb.MessageState_DELIVERED, nil)
		}
	}
}
