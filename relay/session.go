package relay

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// session is one authenticated client connection, independent of the
// transport: the transport feeds it decoded frames (handle) and writes what
// it queues (out). It implements Endpoint.
type session struct {
	srv       *Server
	number    phonebook.MSISDN
	device    string
	tokenHash string // the SHA-256 of the session token it logged in with, checked again later (reauth.go)
	info      ConnInfo
	conn      net.Conn // the transport's connection, if it has one

	// out is the bounded send queue; the transport's writer owns the socket
	// and drains it. closing is closed once; closeErr is then the Error
	// frame the writer sends last.
	out       *sendQueue
	closing   chan struct{}
	closeOnce sync.Once
	closeErr  *relaypb.Error

	mu      sync.Mutex // guards dead and pending
	dead    bool
	pending map[string]*pendingDelivery

	// inflight bounds the sender's messages awaiting a SendResult to half
	// the send queue, so their results cannot overflow it: the reader
	// stops reading Sends until results go out.
	inflight chan struct{}
	limiter  *rate.Limiter               // the user's, shared by their sessions on this node (Server.sendRate)
	numCache map[string]phonebook.MSISDN // raw recipient -> normalised; reader goroutine only

	// The drain goroutine runs only while there is something to drain:
	// Wake starts it unless it is running, and it re-checks woken before
	// it exits, so no wake-up is lost.
	draining atomic.Bool
	woken    atomic.Bool
	drains   sync.WaitGroup // drain and close-time goroutines; serveTCP waits for them
	drainSeq int64          // drain goroutine only

	contactsReq chan struct{}   // one contacts request in flight (presence.go)
	online      <-chan struct{} // closed once the store shows this login online (presence.go)
}

type pendingDelivery struct {
	m    *Message
	at   time.Time
	done func(bool)
}

var _ Endpoint = (*session)(nil)

func newSession(srv *Server, number phonebook.MSISDN, device string, info ConnInfo) *session {
	return &session{
		srv:      srv,
		number:   number,
		device:   device,
		info:     info,
		out:      newSendQueue(srv.cfg.SendQueue),
		closing:  make(chan struct{}),
		pending:  make(map[string]*pendingDelivery),
		inflight: make(chan struct{}, max(1, srv.cfg.SendQueue/2)),
		limiter:  srv.sendRate.get(number),
		numCache: make(map[string]phonebook.MSISDN),
	}
}

// Info implements Endpoint.
func (s *session) Info() ConnInfo { return s.info }

// Push implements Endpoint: it queues f without blocking. A client whose
// queue is full is too slow to serve and is disconnected; what it has not
// acknowledged goes to the offline store.
func (s *session) Push(f *relaypb.Frame) bool {
	select {
	case <-s.closing:
		return false
	default:
	}
	if s.out.push(f) {
		return true
	}
	s.srv.metrics.queueDrops.Inc()
	s.Close(phonebook.Errorf(phonebook.ESlowConsumer, "send queue of %d frames is full", s.out.max))
	return false
}

// Offer implements Endpoint. A message whose Deliver frame is larger than
// a frame may be (stored under an earlier, larger relay.max_text_bytes) is
// failed to its sender (Message.undeliverable) instead of being written.
func (s *session) Offer(m *Message, done func(bool)) {
	f := &relaypb.Frame{Body: &relaypb.Frame_Deliver{Deliver: m.Deliver()}}
	if max := s.srv.cfg.MaxFrameSize; len(m.Text)+mediaSize(m.Media)+phonebook.DeliverOverhead > max {
		if n := proto.Size(f); n > max {
			m.undeliverable = true
			s.srv.failUndeliverable(m, frameTooLarge(n, max))
			done(false)
			return
		}
	}
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		done(false)
		return
	}
	if _, ok := s.pending[m.ID]; ok {
		// Already on its way to this client; that attempt's outcome
		// stands, and this one must not count as acknowledged.
		s.mu.Unlock()
		done(false)
		return
	}
	s.pending[m.ID] = &pendingDelivery{m: m, at: time.Now(), done: done}
	s.mu.Unlock()
	s.Push(f)
}

// Wake implements Endpoint.
func (s *session) Wake() {
	s.woken.Store(true)
	if !s.draining.CompareAndSwap(false, true) {
		return
	}
	s.mu.Lock()
	if s.dead {
		s.mu.Unlock()
		return
	}
	s.drains.Add(1)
	s.mu.Unlock()
	go s.drainLoop()
}

// drainLoop runs drain passes while there is work. A pass cut short by an
// unacknowledged delivery is tried again after a backoff (from AckTimeout,
// doubling to a minute): a slow but live client still gets its messages
// in this session, and one that never acknowledges costs a query a minute.
func (s *session) drainLoop() {
	defer s.drains.Done()
	var backoff time.Duration
	for {
		s.woken.Store(false)
		if !s.drainPass(s.srv.ctx) {
			backoff = min(max(2*backoff, s.srv.cfg.AckTimeout), time.Minute)
			t := time.NewTimer(backoff)
			select {
			case <-s.closing:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		backoff = 0
		s.draining.Store(false)
		if !s.woken.Load() || !s.draining.CompareAndSwap(false, true) {
			return
		}
	}
}

// Close implements Endpoint. It fails every unacknowledged delivery (they
// are stored), detaches the session and has the writer send an Error frame
// and close the connection. A nil err closes without an Error frame.
func (s *session) Close(err error) {
	s.closeOnce.Do(func() {
		if err != nil {
			s.closeErr = errorFrame(err).GetError()
		}
		close(s.closing)
		s.srv.router.Detach(s)
		s.mu.Lock()
		s.dead = true
		pend := s.pending
		s.pending = nil
		if len(pend) > 0 {
			// Failing a delivery stores it, which may block on the
			// committer; Close may be called by the committer itself
			// (a SendResult overflowing this queue), so not here.
			s.drains.Add(1)
		}
		s.mu.Unlock()
		if len(pend) > 0 {
			go func() {
				defer s.drains.Done()
				for _, p := range pend {
					p.done(false)
				}
			}()
		}
	})
}

func errorFrame(err error) *relaypb.Frame {
	e := &relaypb.Error{Code: string(phonebook.ErrorCode(err)), Message: phonebook.ErrorMessage(err)}
	var pe *phonebook.Error
	if errors.As(err, &pe) && !pe.RetryAfter.IsZero() {
		e.RetryAfterSecs = uint32(max(1, time.Until(pe.RetryAfter).Round(time.Second)/time.Second))
	}
	return &relaypb.Frame{Body: &relaypb.Frame_Error{Error: e}}
}

// handle processes one frame from the client. It returns an error when the
// connection must close.
func (s *session) handle(f *relaypb.Frame, now time.Time) error {
	switch b := f.Body.(type) {
	case *relaypb.Frame_Send:
		s.handleSend(b.Send, now)
	case *relaypb.Frame_DeliverAck:
		s.handleAck(b.DeliverAck.GetServerMsgId(), now)
	case *relaypb.Frame_Heartbeat:
		s.Push(&relaypb.Frame{Body: &relaypb.Frame_HeartbeatAck{HeartbeatAck: &relaypb.HeartbeatAck{At: b.Heartbeat.GetAt()}}})
	case *relaypb.Frame_HeartbeatAck:
		// Answer to a server heartbeat; receiving it was the point.
	case *relaypb.Frame_Auth:
		return phonebook.Errorf(phonebook.EProtocol, "already authenticated")
	case nil:
		s.Push(errorFrame(phonebook.Errorf(phonebook.EUnknownFrame, "frame body unknown to this server; ignored")))
	default:
		if handled, err := s.srv.handleContactsFrame(s, f, now); handled {
			return err
		}
		return phonebook.Errorf(phonebook.EProtocol, "a client may not send %s frames", wire.FrameKind(f))
	}
	return nil
}

func (s *session) handleAck(id string, now time.Time) {
	s.mu.Lock()
	p := s.pending[id]
	if p != nil {
		delete(s.pending, id)
	}
	s.mu.Unlock()
	if p != nil {
		p.done(true)
		return
	}
	// Not in flight here: a late ack of a delivery that timed out and went
	// to the offline store. Deleting the stored copy spares the client a
	// duplicate at its next login. Each costs a database write, so they
	// share the Send rate limit.
	if id != "" && len(id) <= 64 && s.limiter.AllowN(now, 1) {
		s.srv.recorder.ack(s, id, now)
	}
}

func failResult(clientID string, err error) *relaypb.Frame {
	return &relaypb.Frame{Body: &relaypb.Frame_SendResult{SendResult: &relaypb.SendResult{
		ClientMsgId: clientID, State: relaypb.MessageState_FAILED, Error: errorFrame(err).GetError(),
	}}}
}

func (s *session) handleSend(req *relaypb.Send, now time.Time) {
	cid := req.GetClientMsgId()
	if err := s.validSend(req); err != nil {
		s.srv.metrics.outcome(outcomeRejected)
		s.Push(failResult(cid, err))
		return
	}
	if !s.limiter.AllowN(now, 1) {
		s.srv.metrics.outcome(outcomeRejected)
		err := &phonebook.Error{Code: phonebook.ERateLimited, Message: "sending too fast", RetryAfter: now.Add(time.Second)}
		s.Push(failResult(cid, err))
		return
	}
	to, ok := s.numCache[req.GetTo()]
	if !ok {
		n, err := phonebook.NormalizeMSISDN(req.GetTo(), s.srv.cfg.DefaultRegion)
		if err != nil {
			s.srv.metrics.outcome(outcomeRejected)
			s.Push(failResult(cid, err))
			return
		}
		if len(s.numCache) >= 256 {
			clear(s.numCache)
		}
		s.numCache[req.GetTo()] = n
		to = n
	}
	select {
	case s.inflight <- struct{}{}:
	case <-s.closing:
		return
	}
	e, result, dup := s.srv.dedup.begin(s, cid, now)
	if dup {
		<-s.inflight
		s.srv.metrics.outcome(outcomeDuplicate)
		if result != nil {
			s.Push(&relaypb.Frame{Body: &relaypb.Frame_SendResult{SendResult: result}})
		}
		// In flight: this session gets the result when it is known.
		return
	}
	m := &Message{
		ID: s.srv.newID(), From: s.number, ClientMsgID: cid, To: to, Type: req.GetType(), Text: req.GetText(),
		SentAt: now, entry: e, accepted: now, holder: s,
	}
	if len(req.GetMedia()) > 0 && !s.attachMedia(m, req.GetMedia()) {
		return
	}
	if m.Type == relaypb.MessageType_MESSAGE_TYPE_UNSPECIFIED {
		m.Type = mediaType(m.Media)
	}
	s.srv.route(m)
}

// attachMedia checks the media a Send names and authorises the recipient
// to read them (Media.Attach) before the message goes anywhere; a refusal
// answers FAILED. It runs on the session's reader: a media message waits
// for one database transaction, and the sender's rate limit bounds them.
func (s *session) attachMedia(m *Message, refs []*relaypb.MediaRef) bool {
	ids := make([]string, len(refs))
	for i, r := range refs {
		ids[i] = r.GetId()
	}
	ctx, cancel := context.WithTimeout(s.srv.ctx, 10*time.Second)
	defer cancel()
	full, err := s.srv.media.Attach(ctx, m.ID, m.From, m.To, ids)
	if err != nil {
		if phonebook.ErrorCode(err) == phonebook.EInternal {
			s.srv.log.Warn("relay: attaching media", "id", m.ID, "from", m.From, "err", err)
			err = phonebook.Errorf(phonebook.EUnavailable, "the media could not be checked; send again with the same client_msg_id")
		}
		s.srv.refuseStored(m, err)
		return false
	}
	m.Media = full
	return true
}

func (s *session) validSend(req *relaypb.Send) error {
	cid := req.GetClientMsgId()
	switch {
	case cid == "" || len(cid) > 64:
		return phonebook.Errorf(phonebook.EInvalid, "client_msg_id must be 1 to 64 bytes")
	case len(req.GetMedia()) > 0 && s.srv.media == nil:
		return phonebook.Errorf(phonebook.EInvalid, "this server does not carry media")
	case len(req.GetMedia()) > maxMediaPerSend:
		return phonebook.Errorf(phonebook.EInvalid, "a message carries at most %d media", maxMediaPerSend)
	case req.GetText() == "" && len(req.GetMedia()) == 0:
		return phonebook.Errorf(phonebook.EInvalid, "message has neither text nor media")
	case len(req.GetText()) > s.srv.cfg.MaxTextBytes:
		return phonebook.Errorf(phonebook.ETooLarge, "text is %d bytes; the limit is %d", len(req.GetText()), s.srv.cfg.MaxTextBytes)
	case !utf8.ValidString(req.GetText()):
		return phonebook.Errorf(phonebook.EInvalid, "text is not UTF-8")
	case req.GetType() < 0 || req.GetType() > relaypb.MessageType_FILE:
		return phonebook.Errorf(phonebook.EInvalid, "unknown message type %d", req.GetType())
	}
	return nil
}

// expireAcks fails deliveries not acknowledged since before cutoff.
func (s *session) expireAcks(cutoff time.Time) {
	var late []*pendingDelivery
	s.mu.Lock()
	for id, p := range s.pending {
		if p.at.Before(cutoff) {
			late = append(late, p)
			delete(s.pending, id)
		}
	}
	s.mu.Unlock()
	for _, p := range late {
		p.done(false)
	}
}

// drainPass delivers stored messages, oldest first. It keeps a window of
// a quarter of the send queue in flight, so a long backlog never overflows
// the queue, and stops at the first delivery that is not acknowledged,
// rewinding so that the next pass starts again there. It reports whether
// it got through.
func (s *session) drainPass(ctx context.Context) (ok bool) {
	const page = 128
	window := make(chan struct{}, max(1, s.out.max/4))
	var mu sync.Mutex
	rewind := int64(-1) // seq before the earliest unacknowledged delivery
	failed := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return rewind >= 0
	}
	defer func() {
		// Wait for the deliveries in flight, then rewind.
		for range cap(window) {
			select {
			case window <- struct{}{}:
			case <-s.closing:
				return
			}
		}
		mu.Lock()
		if rewind >= 0 {
			s.drainSeq = min(s.drainSeq, rewind)
			ok = false
		}
		mu.Unlock()
	}()
	for !failed() {
		msgs, err := s.srv.store.OfflineMessages(ctx, s.number, s.drainSeq, page)
		if err != nil {
			if ctx.Err() == nil {
				s.srv.log.Warn("relay: load offline messages", "number", s.number, "err", err)
			}
			return false
		}
		for i := range msgs {
			select {
			case window <- struct{}{}:
			case <-s.closing:
				return false
			}
			if failed() {
				<-window
				return false
			}
			m := fromStored(&msgs[i])
			prev := s.drainSeq
			s.drainSeq = m.Seq
			s.Offer(m, func(delivered bool) {
				if delivered {
					s.srv.recorder.ack(s, m.ID, time.Now())
				} else if !m.undeliverable { // failed to its sender and deleted: not in the way
					mu.Lock()
					if rewind < 0 || prev < rewind {
						rewind = prev
					}
					mu.Unlock()
				}
				<-window
			})
		}
		if len(msgs) < page {
			return !failed()
		}
	}
	return false
}

// maxMediaPerSend bounds the ids a Send may name before they are looked
// up (media.max_per_message is the limit in force, at most this).
const maxMediaPerSend = 100

// mediaSize is an upper bound of what refs add to a Deliver frame.
func mediaSize(refs []*relaypb.MediaRef) int {
	n := 0
	for _, r := range refs {
		n += proto.Size(r) + 4
	}
	return n
}
