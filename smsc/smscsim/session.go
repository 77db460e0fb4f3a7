package smscsim

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"github.com/fiorix/go-smpp/smpp/pdu/pdufield"

	"github.com/phonebook/phonebook/smsc/internal/wire"
)

var sessionIDs atomic.Uint64

// session is one ESME connection.
type session struct {
	sim *Sim
	id  uint64
	nc  net.Conn
	wmu sync.Mutex
	seq atomic.Uint32

	mu          sync.Mutex
	bindMode    string // "" until bound
	sysID       string
	outstanding map[uint32]bool            // submit seqs not yet answered
	accepted    int                        // submit_sm accepted, for ResetAfter
	waiting     map[uint32]chan pdu.Status // our deliver_sm seqs awaiting deliver_sm_resp

	done     chan struct{}
	doneOnce sync.Once
	wasReset atomic.Bool
}

func newSession(sim *Sim, nc net.Conn) *session {
	return &session{
		sim:         sim,
		id:          sessionIDs.Add(1),
		nc:          nc,
		outstanding: make(map[uint32]bool),
		waiting:     make(map[uint32]chan pdu.Status),
		done:        make(chan struct{}),
	}
}

func (ss *session) mode() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.bindMode
}

func (ss *session) systemID() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.sysID
}

func (ss *session) close() {
	ss.doneOnce.Do(func() {
		close(ss.done)
		ss.nc.Close()
	})
}

// reset drops the connection with a TCP reset (SO_LINGER 0): data not yet
// sent is thrown away, as when an SMSC crashes or a firewall cuts in.
func (ss *session) reset() {
	ss.wasReset.Store(true)
	nc := ss.nc
	if t, ok := nc.(interface{ NetConn() net.Conn }); ok { // TLS
		nc = t.NetConn()
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	ss.close()
}

func (ss *session) write(b []byte) error {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	ss.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := ss.nc.Write(b)
	if err != nil {
		ss.close()
	}
	return err
}

func (ss *session) readLoop() {
	defer ss.close()
	r := bufio.NewReader(ss.nc)
	for {
		f, err := wire.Read(r)
		if err != nil {
			var fe *wire.FramingError
			if errors.As(err, &fe) {
				ss.write(wire.Header(pdu.GenericNACKID, wire.StatusInvCmdLen, fe.Seq))
			}
			return
		}
		if !ss.handle(f) {
			return
		}
	}
}

// handle serves one PDU; false ends the session.
func (ss *session) handle(f wire.Frame) bool {
	sim := ss.sim
	h := f.Header
	switch h.ID {
	case pdu.BindTransceiverID, pdu.BindTransmitterID, pdu.BindReceiverID:
		return ss.bind(f)
	case pdu.SubmitSMID:
		ss.submit(f)
	case pdu.DeliverSMRespID, wire.DataSMID | 0x80000000:
		ss.mu.Lock()
		ch, ok := ss.waiting[h.Seq]
		delete(ss.waiting, h.Seq)
		ss.mu.Unlock()
		if ok {
			ch <- h.Status
		} else {
			sim.count(func(s *Stats) { s.UnexpectedResps++ })
		}
	case pdu.EnquireLinkID:
		sim.count(func(s *Stats) { s.EnquireLinks++ })
		if !sim.cfg.IgnoreEnquireLink {
			ss.write(wire.Header(pdu.EnquireLinkRespID, 0, h.Seq))
		}
	case pdu.UnbindID:
		ss.write(wire.Header(pdu.UnbindRespID, 0, h.Seq))
		return false
	case pdu.GenericNACKID:
		sim.count(func(s *Stats) { s.GenericNacks++ })
		// The ESME could not take one of our deliver_sm: a refusal.
		ss.mu.Lock()
		ch, ok := ss.waiting[h.Seq]
		delete(ss.waiting, h.Seq)
		ss.mu.Unlock()
		if ok {
			ch <- max(h.Status, wire.StatusSysErr)
		}
	case pdu.EnquireLinkRespID, pdu.UnbindRespID:
	default:
		if h.ID&0x80000000 == 0 {
			ss.write(wire.Header(pdu.GenericNACKID, wire.StatusInvCmdID, h.Seq))
		} else {
			sim.count(func(s *Stats) { s.UnexpectedResps++ })
		}
	}
	return true
}

func (ss *session) bind(f wire.Frame) bool {
	sim := ss.sim
	h := f.Header
	respID := h.ID | 0x80000000
	if ss.mode() != "" {
		ss.write(wire.Resp(respID, 0x05, h.Seq, "")) // ESME_RALYBND
		return true
	}
	b, err := f.Decode()
	if err != nil {
		sim.count(func(s *Stats) { s.BindFailures++ })
		ss.write(wire.Resp(respID, wire.StatusSysErr, h.Seq, ""))
		return false
	}
	field := func(n pdufield.Name) string {
		if v := b.Fields()[n]; v != nil {
			return v.String()
		}
		return ""
	}
	sysID, pw := field(pdufield.SystemID), field(pdufield.Password)
	if want := sim.cfg.SystemID; want != "" && subtle.ConstantTimeCompare([]byte(sysID), []byte(want)) != 1 {
		sim.count(func(s *Stats) { s.BindFailures++ })
		ss.write(wire.Resp(respID, 0x0F, h.Seq, "")) // ESME_RINVSYSID
		return false
	}
	if want := sim.cfg.Password; want != "" && subtle.ConstantTimeCompare([]byte(pw), []byte(want)) != 1 {
		sim.count(func(s *Stats) { s.BindFailures++ })
		ss.write(wire.Resp(respID, wire.StatusInvPaswd, h.Seq, ""))
		return false
	}
	mode := map[pdu.ID]string{pdu.BindTransceiverID: "transceiver", pdu.BindTransmitterID: "transmitter", pdu.BindReceiverID: "receiver"}[h.ID]
	ss.mu.Lock()
	ss.bindMode, ss.sysID = mode, sysID
	ss.mu.Unlock()
	sim.count(func(s *Stats) { s.Binds++ })
	sim.log.Info("bound", "system_id", sysID, "mode", mode, "remote", ss.nc.RemoteAddr().String())
	ss.write(wire.Resp(respID, 0, h.Seq, "smscsim"))
	return true
}

func (ss *session) submit(f wire.Frame) {
	sim := ss.sim
	seq := f.Header.Seq
	m := ss.mode()
	if m == "" || m == "receiver" {
		ss.write(wire.Resp(pdu.SubmitSMRespID, wire.StatusInvBndSts, seq, ""))
		return
	}
	sm, err := wire.DecodeSM(f.Body)
	if err != nil {
		sim.log.Warn("malformed submit_sm", "err", err)
		ss.write(wire.Resp(pdu.SubmitSMRespID, wire.StatusInvMsgLen, seq, ""))
		return
	}
	if sim.throttle() {
		sim.count(func(s *Stats) { s.Throttled++ })
		ss.respond(seq, wire.StatusThrottled, "")
		return
	}
	if sim.rejected(sm.Dest) {
		sim.count(func(s *Stats) { s.Rejected++ })
		ss.respond(seq, pdu.Status(sim.cfg.RejectStatus), "")
		return
	}
	n := sim.newMessageID()
	sub := Submit{
		SystemID:           ss.systemID(),
		Seq:                seq,
		Source:             sm.Source,
		SourceTON:          sm.SourceTON,
		SourceNPI:          sm.SourceNPI,
		Dest:               sm.Dest,
		DestTON:            sm.DestTON,
		DestNPI:            sm.DestNPI,
		DataCoding:         sm.DataCoding,
		ESMClass:           sm.ESMClass,
		RegisteredDelivery: sm.RegisteredDelivery,
		ValidityPeriod:     sm.ValidityPeriod,
		Payload:            sm.ShortMessage,
		Text:               decodeText(sm.DataCoding, stripUDH(sm.ESMClass, sm.ShortMessage)),
		MessageID:          sim.formatID(n, sim.cfg.MessageIDStyle),
		Time:               time.Now(),
		Session:            ss.id,
		AfterReset:         ss.wasReset.Load(),
	}
	if stat := sim.receiptStat(n); wantReceipt(sm.RegisteredDelivery, stat) {
		sub.Receipt = stat
	}
	sim.recordSubmit(sub)
	ss.mu.Lock()
	ss.accepted++
	resetAfter := int(sim.resetAfter.Load())
	reset := resetAfter > 0 && ss.accepted%resetAfter == 0
	if reset {
		ss.outstanding[seq] = true // never answered
	}
	lost := len(ss.outstanding)
	ss.mu.Unlock()
	if sub.Receipt != "" {
		d := sim.receipt(sub, n)
		if sim.receiptFirst.Load() && m == "transceiver" && !reset {
			// The receipt overtakes its own submit_sm_resp on this session.
			sent := make(chan struct{})
			sim.deliverAsync(d, ss, 0, sent)
			select {
			case <-sent:
			case <-ss.done:
			}
		} else if sim.collideSeq.Load() && m == "transceiver" && !reset {
			// The receipt overtakes its own submit_sm_resp, in the same
			// sequence number: the ESME must tell them apart by command id.
			ss.mu.Lock()
			ss.outstanding[seq] = true
			ss.mu.Unlock()
			sent := make(chan struct{})
			sim.deliverAsync(d, ss, seq, sent)
			select {
			case <-sent:
			case <-ss.done:
			}
		} else {
			sim.wg.Add(1)
			go func() {
				defer sim.wg.Done()
				if sleepOrClosed(sim.closed, sim.cfg.ReceiptDelay) {
					sim.deliver(d, nil, 0, nil)
				}
			}()
		}
	}
	if reset {
		sim.count(func(s *Stats) { s.Resets++; s.LostResps += int64(lost) })
		sim.log.Info("resetting the session", "after_submits", ss.accepted, "lost_responses", lost)
		ss.reset()
		return
	}
	ss.respond(seq, 0, sub.MessageID)
}

// respond answers a submit_sm, after RespDelay when configured.
func (ss *session) respond(seq uint32, st pdu.Status, id string) {
	sim := ss.sim
	delay := sim.respDelay.Load().Pick()
	if delay <= 0 {
		ss.mu.Lock()
		delete(ss.outstanding, seq)
		ss.mu.Unlock()
		ss.write(wire.Resp(pdu.SubmitSMRespID, st, seq, id))
		return
	}
	ss.mu.Lock()
	ss.outstanding[seq] = true
	n := len(ss.outstanding)
	ss.mu.Unlock()
	sim.count(func(s *Stats) { s.MaxOutstanding = max(s.MaxOutstanding, n) })
	sim.wg.Add(1)
	go func() {
		defer sim.wg.Done()
		answer := sleepOrClosed(ss.done, delay)
		ss.mu.Lock()
		delete(ss.outstanding, seq)
		ss.mu.Unlock()
		if answer { // a dropped link answers nothing (the socket may close a moment after done)
			ss.write(wire.Resp(pdu.SubmitSMRespID, st, seq, id))
		}
	}()
}

// sendDeliver writes one deliver_sm and waits for its response. seq 0 picks
// one: a colliding one when configured and available, else the session's own.
func (ss *session) sendDeliver(d delivery, seq uint32, sent chan<- struct{}) (pdu.Status, error) {
	ch := make(chan pdu.Status, 1)
	ss.mu.Lock()
	if seq == 0 && ss.sim.collideSeq.Load() {
		for s := range ss.outstanding {
			if _, busy := ss.waiting[s]; !busy {
				seq = s
				break
			}
		}
	}
	for seq == 0 || ss.waiting[seq] != nil {
		seq = ss.seq.Add(1) & 0x7FFFFFFF
	}
	ss.waiting[seq] = ch
	ss.mu.Unlock()
	defer func() {
		ss.mu.Lock()
		if ss.waiting[seq] == ch {
			delete(ss.waiting, seq)
		}
		ss.mu.Unlock()
	}()
	b, err := wire.EncodeSM(pdu.DeliverSMID, seq, d.sm)
	if d.dataSM {
		b, err = wire.EncodeDataSM(seq, d.sm)
	}
	if err != nil {
		return 0, err
	}
	err = ss.write(b)
	if sent != nil {
		close(sent)
	}
	if err != nil {
		return 0, err
	}
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case st := <-ch:
		return st, nil
	case <-ss.done:
		return 0, errors.New("session closed")
	case <-t.C:
		return 0, fmt.Errorf("no deliver_sm_resp for seq %d", seq)
	}
}
