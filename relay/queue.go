package relay

import (
	"sync"

	"github.com/phonebook/phonebook/proto/relaypb"
)

// sendQueue is a session's bounded outgoing frame queue. Unlike a buffered
// channel it holds no memory while empty, which matters with tens of
// thousands of idle connections, and the writer takes everything queued in
// one step.
type sendQueue struct {
	mu     sync.Mutex
	frames []*relaypb.Frame
	max    int
	ready  chan struct{} // capacity 1: "frames were queued"
}

func newSendQueue(max int) *sendQueue {
	return &sendQueue{max: max, ready: make(chan struct{}, 1)}
}

// push queues f; false when the queue is full.
func (q *sendQueue) push(f *relaypb.Frame) bool {
	q.mu.Lock()
	if len(q.frames) >= q.max {
		q.mu.Unlock()
		return false
	}
	q.frames = append(q.frames, f)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// takeAll moves every queued frame into dst (reset first) and returns it.
// The queue keeps a small backing array for the next burst and lets a
// large one go.
func (q *sendQueue) takeAll(dst []*relaypb.Frame) []*relaypb.Frame {
	dst = dst[:0]
	q.mu.Lock()
	dst = append(dst, q.frames...)
	clear(q.frames)
	if cap(q.frames) > 64 {
		q.frames = nil
	} else {
		q.frames = q.frames[:0]
	}
	q.mu.Unlock()
	return dst
}
