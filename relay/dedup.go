package relay

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// dedupTable remembers each sender's recent client_msg_ids so that a retry
// (same id, typically after a reconnect) gets the first attempt's
// SendResult instead of sending the message twice. Older ids are caught by
// the chat record table's unique key when the message was stored.
type dedupTable struct {
	window int
	seed   maphash.Seed
	shards [64]dedupShard
}

type dedupShard struct {
	mu sync.Mutex
	m  map[phonebook.MSISDN]*senderWindow
}

type senderWindow struct {
	ids      map[string]*dedupEntry
	ring     []string
	pos      int
	lastUsed time.Time
}

// dedupEntry is one message's outcome: result is nil while it is in flight.
// origin is the session to answer; a retry from a newer session takes it over.
type dedupEntry struct {
	result *relaypb.SendResult
	origin *session
}

func newDedupTable(window int) *dedupTable {
	t := &dedupTable{window: window, seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[phonebook.MSISDN]*senderWindow)
	}
	return t
}

func (t *dedupTable) shard(n phonebook.MSISDN) *dedupShard {
	return &t.shards[maphash.String(t.seed, string(n))%uint64(len(t.shards))]
}

// begin returns the entry for (sender, id) and whether it already existed.
// For an existing entry still in flight, s becomes the session to answer.
// The returned result is the final SendResult when already known.
func (t *dedupTable) begin(s *session, id string, now time.Time) (e *dedupEntry, result *relaypb.SendResult, dup bool) {
	sh := t.shard(s.number)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	w := sh.m[s.number]
	if w == nil {
		w = &senderWindow{ids: make(map[string]*dedupEntry, 8), ring: make([]string, 0, 8)}
		sh.m[s.number] = w
	}
	w.lastUsed = now
	if e := w.ids[id]; e != nil {
		if e.result == nil {
			e.origin = s
		}
		return e, e.result, true
	}
	e = &dedupEntry{origin: s}
	if len(w.ring) < t.window {
		w.ring = append(w.ring, id)
	} else {
		delete(w.ids, w.ring[w.pos])
		w.ring[w.pos] = id
		w.pos = (w.pos + 1) % t.window
	}
	w.ids[id] = e
	return e, nil, false
}

// finish records the outcome and returns the session to answer.
func (t *dedupTable) finish(sender phonebook.MSISDN, e *dedupEntry, r *relaypb.SendResult) *session {
	sh := t.shard(sender)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e.result = r
	return e.origin
}

// forget drops a failed attempt so that a retry is tried afresh.
func (t *dedupTable) forget(sender phonebook.MSISDN, id string, e *dedupEntry) {
	sh := t.shard(sender)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if w := sh.m[sender]; w != nil && w.ids[id] == e {
		delete(w.ids, id)
	}
}

// expire drops the windows of senders idle since before cutoff whose
// messages are all finished.
func (t *dedupTable) expire(cutoff time.Time) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
	next:
		for n, w := range sh.m {
			if !w.lastUsed.Before(cutoff) {
				continue
			}
			for _, e := range w.ids {
				if e.result == nil {
					continue next
				}
			}
			delete(sh.m, n)
		}
		sh.mu.Unlock()
	}
}
