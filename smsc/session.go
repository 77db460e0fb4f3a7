package smsc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"

	"github.com/phonebook/phonebook/smsc/internal/wire"
)

// TLV tags we read off deliver_sm.
const (
	tagReceiptedMessageID pdutlv.Tag = 0x001E
	tagMessageState       pdutlv.Tag = 0x0427
	tagNetworkErrorCode   pdutlv.Tag = 0x0423
	tagMessagePayload     pdutlv.Tag = 0x0424
	tagSARMsgRefNum       pdutlv.Tag = 0x020C
	tagSARTotalSegments   pdutlv.Tag = 0x020E
	tagSARSegmentSeqnum   pdutlv.Tag = 0x020F
)

// respKey identifies the response a request waits for. Matching on the
// command id as well as the sequence number keeps a deliver_sm (a request
// from the SMSC, in the SMSC's own sequence space) from ever being taken for
// a submit_sm_resp.
type respKey struct {
	seq uint32
	id  pdu.ID // the response's command id: request id | 0x80000000
}

// requestIDs are the requests we send, for matching generic_nack (which
// names only a sequence number).
var requestIDs = []pdu.ID{pdu.SubmitSMID, pdu.EnquireLinkID, pdu.UnbindID, pdu.BindTransceiverID, pdu.BindTransmitterID, pdu.BindReceiverID}

// session is one TCP connection in one bind. The read loop owns the reader;
// writes are serialised by wmu; deliver_sm are handled by a bounded pool of
// workers so that a slow handler never delays submit_sm_resp.
type session struct {
	link *Link
	role string
	nc   net.Conn
	r    *bufio.Reader

	seq atomic.Uint32
	wmu sync.Mutex

	pmu     sync.Mutex
	pending map[respKey]chan wire.Frame

	done         chan struct{}
	closeOnce    sync.Once
	shutdownOnce sync.Once
	err          error // why done was closed; written before close(done)

	deliverQ  chan wire.Frame
	accepting atomic.Bool // deliver_sm go to the pool (false once shutting down)

	// busy counts deliver_sm taken but not yet answered; idle is closed when
	// it drops to zero while shutdown waits.
	bmu     sync.Mutex
	busy    int
	idle    chan struct{}
	workers sync.WaitGroup
	started sync.WaitGroup // read loop and keep-alive
}

func newSession(l *Link, role string, nc net.Conn) *session {
	s := &session{
		link:     l,
		role:     role,
		nc:       nc,
		r:        bufio.NewReaderSize(nc, 8<<10),
		pending:  make(map[respKey]chan wire.Frame),
		done:     make(chan struct{}),
		deliverQ: make(chan wire.Frame, l.cfg.DeliverQueue),
	}
	s.started.Add(1)
	go func() {
		defer s.started.Done()
		s.readLoop()
	}()
	return s
}

// bound starts what only a bound session does: deliveries and keep-alive.
func (s *session) bound(ctx context.Context) {
	hctx := context.WithoutCancel(ctx)
	for range s.link.cfg.DeliverWorkers {
		s.workers.Add(1)
		s.link.handlers.Add(1)
		go func() {
			defer s.link.handlers.Done()
			defer s.workers.Done()
			s.deliverWorker(hctx)
		}()
	}
	s.accepting.Store(true)
	s.started.Add(1)
	go func() {
		defer s.started.Done()
		s.keepAlive()
	}()
}

// nextSeq returns the next sequence number, wrapping within 1..0x7FFFFFFF.
func (s *session) nextSeq() uint32 {
	for {
		old := s.seq.Load()
		next := old + 1
		if next > 0x7FFFFFFF {
			next = 1
		}
		if s.seq.CompareAndSwap(old, next) {
			return next
		}
	}
}

func (s *session) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	select {
	case <-s.done:
		return s.err
	default:
	}
	s.nc.SetWriteDeadline(time.Now().Add(s.link.cfg.RespTimeout))
	if _, err := s.nc.Write(b); err != nil {
		err = fmt.Errorf("write: %w", err)
		s.close(err)
		return err
	}
	return nil
}

// request sends a request built by encode (given its sequence number) and
// waits up to RespTimeout for the matching response or generic_nack.
func (s *session) request(id pdu.ID, encode func(seq uint32) ([]byte, error)) (wire.Frame, error) {
	seq := s.nextSeq()
	b, err := encode(seq)
	if err != nil {
		return wire.Frame{}, err
	}
	key := respKey{seq: seq, id: id | 0x80000000}
	ch := make(chan wire.Frame, 1)
	s.pmu.Lock()
	s.pending[key] = ch
	s.pmu.Unlock()
	defer func() {
		s.pmu.Lock()
		delete(s.pending, key)
		s.pmu.Unlock()
	}()
	if err := s.write(b); err != nil {
		// A failed write sent no whole PDU: the SMSC cannot have acted on it.
		return wire.Frame{}, fmt.Errorf("%w: %v", ErrNotWritten, err)
	}
	t := time.NewTimer(s.link.cfg.RespTimeout)
	defer t.Stop()
	select {
	case f := <-ch:
		return f, nil
	case <-t.C:
		return wire.Frame{}, fmt.Errorf("%w (%s after %s)", ErrRespTimeout, id, s.link.cfg.RespTimeout)
	case <-s.done:
		return wire.Frame{}, fmt.Errorf("%w: %v", ErrLinkClosed, s.err)
	}
}

// close ends the session at once; requests waiting fail with ErrLinkClosed.
func (s *session) close(err error) {
	s.closeOnce.Do(func() {
		s.err = err
		close(s.done)
		s.nc.Close()
	})
}

// shutdown ends a session politely: let running handlers answer, unbind,
// then close. Concurrent callers all return once it is done.
func (s *session) shutdown() { s.shutdownOnce.Do(s.unbind) }

func (s *session) unbind() {
	s.accepting.Store(false)
	idle := make(chan struct{})
	s.bmu.Lock()
	if s.busy == 0 {
		close(idle)
	} else {
		s.idle = idle
	}
	s.bmu.Unlock()
	t := time.NewTimer(s.link.cfg.RespTimeout)
	select {
	case <-idle:
	case <-t.C:
	case <-s.done:
	}
	t.Stop()
	if _, err := s.request(pdu.UnbindID, func(seq uint32) ([]byte, error) {
		return wire.Header(pdu.UnbindID, 0, seq), nil
	}); err != nil {
		s.link.log.Debug("unbind", "conn", s.role, "err", err)
	}
	s.close(errors.New("unbound by us"))
	s.started.Wait()
	s.workers.Wait()
}

func (s *session) readLoop() {
	defer close(s.deliverQ)
	for {
		f, err := wire.Read(s.r)
		if err != nil {
			var fe *wire.FramingError
			if errors.As(err, &fe) {
				s.link.log.Warn("malformed PDU from SMSC; closing", "conn", s.role, "err", err)
				s.write(wire.Header(pdu.GenericNACKID, wire.StatusInvCmdLen, fe.Seq))
			}
			s.close(fmt.Errorf("read: %w", err))
			return
		}
		if f.IsResponse() {
			s.dispatch(f)
			continue
		}
		s.serve(f)
		select {
		case <-s.done:
			return
		default:
		}
	}
}

// dispatch hands a response to the request waiting for it.
func (s *session) dispatch(f wire.Frame) {
	keys := []respKey{{f.Header.Seq, f.Header.ID}}
	if f.Header.ID == pdu.GenericNACKID {
		keys = keys[:0]
		for _, id := range requestIDs {
			keys = append(keys, respKey{f.Header.Seq, id | 0x80000000})
		}
	}
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for _, k := range keys {
		if ch, ok := s.pending[k]; ok {
			delete(s.pending, k)
			ch <- f
			return
		}
	}
	s.link.log.Debug("response matches no request (late or unknown)", "conn", s.role, "id", f.Header.ID.String(), "seq", f.Header.Seq)
}

// serve answers a request from the SMSC.
func (s *session) serve(f wire.Frame) {
	h := f.Header
	switch h.ID {
	case pdu.DeliverSMID, wire.DataSMID:
		respID := h.ID | 0x80000000
		if !s.accepting.Load() {
			s.write(wire.Resp(respID, wire.StatusXTAppN, h.Seq, ""))
			return
		}
		s.busyAdd(1)
		select {
		case s.deliverQ <- f:
		default:
			s.busyAdd(-1)
			s.link.log.Warn("deliver_sm queue full; asking the SMSC to redeliver", "conn", s.role)
			s.link.m.delivers.WithLabelValues(s.link.cfg.Name, "unknown", "queue_full").Inc()
			s.write(wire.Resp(respID, wire.StatusXTAppN, h.Seq, ""))
		}
	case pdu.EnquireLinkID:
		s.write(wire.Header(pdu.EnquireLinkRespID, 0, h.Seq))
	case pdu.UnbindID:
		s.write(wire.Header(pdu.UnbindRespID, 0, h.Seq))
		s.close(errors.New("unbound by SMSC"))
	case wire.AlertNotificationID:
		// No response is defined for alert_notification.
	default:
		s.link.log.Warn("unsupported request from SMSC", "conn", s.role, "id", fmt.Sprintf("0x%08X", uint32(h.ID)), "seq", h.Seq)
		s.write(wire.Header(pdu.GenericNACKID, wire.StatusInvCmdID, h.Seq))
	}
}

func (s *session) busyAdd(n int) {
	s.bmu.Lock()
	defer s.bmu.Unlock()
	s.busy += n
	if s.busy == 0 && s.idle != nil {
		close(s.idle)
		s.idle = nil
	}
}

func (s *session) deliverWorker(ctx context.Context) {
	for f := range s.deliverQ {
		select {
		case <-s.done:
			// Unanswered: the SMSC delivers it again.
		default:
			s.deliver(ctx, f)
		}
		s.busyAdd(-1)
	}
}

// deliver decodes one deliver_sm (or data_sm), runs the handler and answers.
func (s *session) deliver(ctx context.Context, f wire.Frame) {
	l := s.link
	seq := f.Header.Seq
	respID := f.Header.ID | 0x80000000
	d, err := decodeDeliver(l.cfg.Name, f.Header.ID, f.Body)
	if err != nil {
		// Redelivering the same bytes cannot help: refuse permanently.
		l.log.Warn("malformed deliver_sm from SMSC", "conn", s.role, "seq", seq, "err", err)
		l.m.delivers.WithLabelValues(l.cfg.Name, "unknown", "malformed").Inc()
		s.write(wire.Resp(respID, wire.StatusXPAppN, seq, ""))
		return
	}
	kind := "mo"
	if d.IsReceipt() {
		kind = "receipt"
	}
	status := wire.StatusOK
	if err := s.callHandler(ctx, d); err != nil {
		l.log.Warn("deliver_sm handler failed; SMSC will redeliver", "conn", s.role, "kind", kind, "err", err)
		status = wire.StatusXTAppN
	}
	result := "ok"
	if status != wire.StatusOK {
		result = "nack"
	}
	l.m.delivers.WithLabelValues(l.cfg.Name, kind, result).Inc()
	s.write(wire.Resp(respID, status, seq, ""))
}

func (s *session) callHandler(ctx context.Context, d Deliver) (err error) {
	if s.link.handler == nil {
		return errors.New("no deliver handler configured")
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("deliver handler panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, handlerTimeout)
	defer cancel()
	return s.link.handler(ctx, d)
}

func decodeDeliver(link string, id pdu.ID, body []byte) (Deliver, error) {
	decode := wire.DecodeSM
	if id == wire.DataSMID {
		decode = wire.DecodeDataSM
	}
	sm, err := decode(body)
	if err != nil {
		return Deliver{}, err
	}
	d := Deliver{
		Link:       link,
		SourceAddr: sm.Source,
		SourceTON:  sm.SourceTON,
		SourceNPI:  sm.SourceNPI,
		DestAddr:   sm.Dest,
		ESMClass:   sm.ESMClass,
		DataCoding: sm.DataCoding,
		Payload:    sm.ShortMessage,
	}
	if len(d.Payload) == 0 {
		d.Payload = bytes.Clone(sm.TLV(tagMessagePayload))
	}
	d.ReceiptedMessageID = wire.CString(sm.TLV(tagReceiptedMessageID))
	if v := sm.TLV(tagMessageState); len(v) == 1 {
		d.MessageState = v[0]
	}
	d.NetworkErrorCode = bytes.Clone(sm.TLV(tagNetworkErrorCode))
	if v := sm.TLV(tagSARMsgRefNum); len(v) == 2 {
		d.SARRef = binary.BigEndian.Uint16(v)
	}
	if v := sm.TLV(tagSARTotalSegments); len(v) == 1 {
		d.SARTotal = v[0]
	}
	if v := sm.TLV(tagSARSegmentSeqnum); len(v) == 1 {
		d.SARSeq = v[0]
	}
	return d, nil
}

// keepAlive sends enquire_link every EnquireLink and closes the session when
// one goes unanswered for RespTimeout.
func (s *session) keepAlive() {
	t := time.NewTicker(s.link.cfg.EnquireLink)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		_, err := s.request(pdu.EnquireLinkID, func(seq uint32) ([]byte, error) {
			return wire.Header(pdu.EnquireLinkID, 0, seq), nil
		})
		if err != nil {
			s.close(fmt.Errorf("enquire_link: %w", err))
			return
		}
	}
}
