// Package smscsim is an SMSC simulator: a real SMPP 3.4 server over TCP that
// accepts binds and submit_sm, answers with message ids in a configurable
// style, sends delivery receipts (text and/or TLVs) and mobile-originated
// messages, and can misbehave on purpose (throttling, rejections, delayed
// responses, deliver_sm sequence numbers that collide with outstanding
// submits, malformed PDUs, dropped links). Go tests drive it through its
// methods; `phonebook smsc-sim` runs it for people, printing every SMS it
// receives so that verification codes are visible without a phone.
package smscsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phonebook/phonebook/internal/simctl"
)

// Config configures a simulator. Zero values are the defaults noted.
type Config struct {
	SystemID string // accepted system_id; "" = any
	Password string // accepted password; "" = any

	ReceiptDelay time.Duration // from submit to receipt; 0 = at once
	// ReceiptStat is every receipt's outcome: DELIVRD (default), UNDELIV,
	// EXPIRED, REJECTD, DELETED, ACCEPTD, UNKNOWN; or MIXED: DELIVRD,
	// UNDELIV and EXPIRED in turn by message id, so that a receipt applied
	// to the wrong message shows (Submit.Receipt records each one's).
	ReceiptStat    string
	ReceiptErr     int    // err: field and network_error_code; default 0
	ReceiptFormat  string // "text+tlv" (default), "text" or "tlv"
	MessageIDStyle string // in submit_sm_resp: "hex-upper" (default), "hex-lower", "decimal" (zero-padded)
	ReceiptIDStyle string // the same id as written in receipts; default MessageIDStyle
	// ShortIDs makes message ids count up from 1, without padding (1, 2,
	// ... a, b, 10 in hex), as many SMSCs do.
	ShortIDs bool
	// ReceiptBeforeResp writes each receipt on the submitting session
	// before the submit_sm_resp (ReceiptDelay is then ignored).
	ReceiptBeforeResp bool
	// ResetAfter drops a session abruptly (TCP reset) once it has had this
	// many submit_sm accepted: the last one is accepted (and gets its
	// receipt) but its submit_sm_resp is never written, and responses still
	// held back by RespDelay are lost. 0 = never.
	ResetAfter int

	ThrottleEvery  int      // every Nth submit_sm is answered ESME_RTHROTTLED; 0 = never
	RejectPrefixes []string // destinations starting with one of these ("+999" or "999") are refused
	RejectStatus   uint32   // status for them; default ESME_RINVDSTADR (0x0B)

	// CollideSeq makes deliver_sm reuse the sequence numbers of the ESME's
	// unanswered submits: a receipt is sent before its submit_sm_resp with
	// the submit's sequence number, and MO messages borrow an outstanding one.
	CollideSeq bool
	// RespDelay holds back every submit_sm_resp: an SMSC that answers in a
	// realistic time. With RespDelayMax above it, each response waits a
	// random time between the two (responses then overtake each other).
	RespDelay    time.Duration
	RespDelayMax time.Duration
	// IgnoreEnquireLink leaves enquire_link unanswered (a dead link).
	IgnoreEnquireLink bool
	// MOAsDataSM sends MO messages as data_sm (text in message_payload)
	// instead of deliver_sm, as some SMSCs do.
	MOAsDataSM bool
	// RedeliverAfter is the wait before a deliver_sm that was refused or not
	// answered is sent again; default 1s.
	RedeliverAfter time.Duration

	// TLS, when set, makes the simulator accept SMPP over TLS only.
	TLS *tls.Config

	Output io.Writer    // every received SMS is printed here; nil = nowhere
	Log    *slog.Logger // nil = discard
}

// Submit is one accepted submit_sm.
type Submit struct {
	SystemID           string    `json:"system_id"`
	Seq                uint32    `json:"seq"`
	Source             string    `json:"source"`
	SourceTON          uint8     `json:"source_ton"`
	SourceNPI          uint8     `json:"source_npi"`
	Dest               string    `json:"dest"`
	DestTON            uint8     `json:"dest_ton"`
	DestNPI            uint8     `json:"dest_npi"`
	DataCoding         uint8     `json:"data_coding"`
	ESMClass           uint8     `json:"esm_class"`
	RegisteredDelivery uint8     `json:"registered_delivery"`
	ValidityPeriod     string    `json:"validity_period,omitempty"`
	Payload            []byte    `json:"payload"` // raw short_message, UDH included
	Text               string    `json:"text"`    // decoded, without UDH
	MessageID          string    `json:"message_id"`
	Receipt            string    `json:"receipt,omitempty"` // the receipt's stat, "" = none asked for
	Time               time.Time `json:"time"`
	Session            uint64    `json:"session"`               // the ESME connection it came on (each connection has its own number)
	AfterReset         bool      `json:"after_reset,omitempty"` // read from the buffer after a ResetAfter reset of its session
}

// Stats counts what the simulator has seen and done.
type Stats struct {
	Binds           int64 `json:"binds"`
	BindFailures    int64 `json:"bind_failures"`
	Submits         int64 `json:"submits"` // accepted
	Throttled       int64 `json:"throttled"`
	Rejected        int64 `json:"rejected"`
	Delivered       int64 `json:"delivered"`     // deliver_sm answered ESME_ROK
	DeliverRefused  int64 `json:"deliver_nacks"` // answered otherwise or not at all
	EnquireLinks    int64 `json:"enquire_links"`
	GenericNacks    int64 `json:"generic_nacks"` // received from the ESME
	Resets          int64 `json:"resets"`        // sessions dropped by ResetAfter
	LostResps       int64 `json:"lost_resps"`    // accepted submits whose response a reset lost
	UnexpectedResps int64 `json:"unexpected_resps"`
	// MaxOutstanding is the most submit_sm one session had unanswered at
	// once (meaningful with RespDelay): it shows the ESME's window.
	MaxOutstanding int `json:"max_outstanding"`
}

// Sim is a running simulator.
type Sim struct {
	cfg Config
	log *slog.Logger

	ln      net.Listener
	httpSrv *http.Server
	closed  chan struct{}
	wg      sync.WaitGroup

	throttleEvery atomic.Int64
	respDelay     atomic.Pointer[simctl.DelayRange]
	// The fault modes SetFaults changes while running (Config's
	// ReceiptBeforeResp, ResetAfter and CollideSeq at start).
	receiptFirst, collideSeq atomic.Bool
	resetAfter               atomic.Int64
	submitN                  atomic.Int64
	nextID                   atomic.Uint64
	nextRef                  atomic.Uint32

	mu       sync.Mutex
	sessions map[*session]struct{}
	submits  []Submit
	changed  chan struct{} // closed and replaced whenever submits grows
	rr       int
	concat   map[concatKey]*concatParts
	stats    Stats
}

// New returns a simulator; Start listens.
func New(cfg Config) *Sim {
	if cfg.ReceiptStat == "" {
		cfg.ReceiptStat = "DELIVRD"
	}
	cfg.ReceiptStat = strings.ToUpper(cfg.ReceiptStat)
	if cfg.ReceiptFormat == "" {
		cfg.ReceiptFormat = "text+tlv"
	}
	if cfg.MessageIDStyle == "" {
		cfg.MessageIDStyle = "hex-upper"
	}
	if cfg.ReceiptIDStyle == "" {
		cfg.ReceiptIDStyle = cfg.MessageIDStyle
	}
	if cfg.RejectStatus == 0 {
		cfg.RejectStatus = 0x0B
	}
	if cfg.RedeliverAfter <= 0 {
		cfg.RedeliverAfter = time.Second
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Sim{
		cfg:      cfg,
		log:      cfg.Log,
		closed:   make(chan struct{}),
		sessions: make(map[*session]struct{}),
		changed:  make(chan struct{}),
		concat:   make(map[concatKey]*concatParts),
	}
	s.throttleEvery.Store(int64(cfg.ThrottleEvery))
	s.respDelay.Store(simctl.NewDelayRange(cfg.RespDelay, cfg.RespDelayMax))
	s.SetFaults(Faults{ReceiptBeforeResp: &cfg.ReceiptBeforeResp, ResetAfter: &cfg.ResetAfter, CollideSeq: &cfg.CollideSeq})
	if !cfg.ShortIDs {
		s.nextID.Store(0x5E1A0000)
	}
	return s
}

// Validate reports configuration values the simulator does not know.
func (c Config) Validate() error {
	if _, ok := messageStates[strings.ToUpper(c.ReceiptStat)]; c.ReceiptStat != "" && !ok && !strings.EqualFold(c.ReceiptStat, statMixed) {
		return fmt.Errorf("receipt stat %q: want one of DELIVRD, UNDELIV, EXPIRED, REJECTD, DELETED, ACCEPTD, UNKNOWN, MIXED", c.ReceiptStat)
	}
	if c.ResetAfter < 0 {
		return errors.New("reset after must be 0 or more")
	}
	switch c.ReceiptFormat {
	case "", "text", "tlv", "text+tlv":
	default:
		return fmt.Errorf("receipt format %q: want text, tlv or text+tlv", c.ReceiptFormat)
	}
	for _, st := range []string{c.MessageIDStyle, c.ReceiptIDStyle} {
		switch st {
		case "", "hex-upper", "hex-lower", "decimal":
		default:
			return fmt.Errorf("message id style %q: want hex-upper, hex-lower or decimal", st)
		}
	}
	if c.ThrottleEvery < 0 {
		return errors.New("throttle every must be 0 or more")
	}
	return nil
}

// Start listens for SMPP on addr ("127.0.0.1:0" picks a port).
func (s *Sim) Start(addr string) error {
	if err := s.cfg.Validate(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("smscsim: %w", err)
	}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	s.ln = ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.accept()
	}()
	return nil
}

// Addr is the SMPP listening address.
func (s *Sim) Addr() string { return s.ln.Addr().String() }

// Close stops listening, drops every session and stops redelivery.
func (s *Sim) Close() {
	select {
	case <-s.closed:
		return
	default:
	}
	close(s.closed)
	if s.ln != nil {
		s.ln.Close()
	}
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		s.httpSrv.Shutdown(ctx)
		cancel()
	}
	s.DropLinks()
	s.wg.Wait()
}

func (s *Sim) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return
			default:
			}
			s.log.Warn("accept", "err", err)
			if !sleepOrClosed(s.closed, 50*time.Millisecond) {
				return
			}
			continue
		}
		ss := newSession(s, nc)
		s.mu.Lock()
		s.sessions[ss] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			ss.readLoop()
			s.mu.Lock()
			delete(s.sessions, ss)
			s.mu.Unlock()
		}()
	}
}

// DropLinks closes every session abruptly, without unbind.
func (s *Sim) DropLinks() {
	s.mu.Lock()
	all := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		all = append(all, ss)
	}
	s.mu.Unlock()
	for _, ss := range all {
		ss.close()
	}
}

// SetThrottleEvery makes every nth submit_sm (counting from now) fail with
// ESME_RTHROTTLED; 0 turns throttling off.
func (s *Sim) SetThrottleEvery(n int) {
	s.submitN.Store(0)
	s.throttleEvery.Store(int64(max(n, 0)))
}

// SetRespDelay changes the delay of submit_sm_resp from now on.
func (s *Sim) SetRespDelay(d time.Duration) { s.SetRespDelayRange(d, d) }

// SetRespDelayRange makes each submit_sm_resp from now on wait a random
// time between lo and hi (hi below lo counts as lo).
func (s *Sim) SetRespDelayRange(lo, hi time.Duration) {
	lo = max(lo, 0)
	s.respDelay.Store(simctl.NewDelayRange(lo, hi))
}

// RespDelay returns the current submit_sm_resp delay range.
func (s *Sim) RespDelay() (lo, hi time.Duration) {
	r := s.respDelay.Load()
	return r.Min, r.Max
}

// ParseDelayRange reads a response delay as the simulator's --resp-delay
// and its HTTP API take it: one duration ("5ms") or a range ("1ms-20ms").
func ParseDelayRange(v string) (lo, hi time.Duration, err error) { return simctl.ParseDelayRange(v) }

// Stats returns the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Bound counts bound sessions.
func (s *Sim) Bound() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ss := range s.sessions {
		if ss.mode() != "" {
			n++
		}
	}
	return n
}

func (s *Sim) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// Submits returns a copy of every accepted submit_sm so far.
func (s *Sim) Submits() []Submit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.submits)
}

// WaitSubmits waits until at least n submits were accepted and returns them.
func (s *Sim) WaitSubmits(ctx context.Context, n int) ([]Submit, error) {
	for {
		s.mu.Lock()
		if len(s.submits) >= n {
			out := slices.Clone(s.submits)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed
		have := len(s.submits)
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("smscsim: %d of %d submits: %w", have, n, ctx.Err())
		}
	}
}

func (s *Sim) recordSubmit(sub Submit) {
	s.mu.Lock()
	s.submits = append(s.submits, sub)
	s.stats.Submits++
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	s.print(sub)
}

// receiver picks a bound session able to take deliver_sm for systemID
// (round robin); "" matches any.
func (s *Sim) receiver(systemID string) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*session
	for ss := range s.sessions {
		m := ss.mode()
		if (m == "transceiver" || m == "receiver") && (systemID == "" || ss.systemID() == systemID) {
			all = append(all, ss)
		}
	}
	if len(all) == 0 {
		return nil
	}
	slices.SortFunc(all, func(a, b *session) int { return int(a.id - b.id) })
	s.rr++
	return all[s.rr%len(all)]
}

// receiverSystems lists the system_ids with a bound receiver.
func (s *Sim) receiverSystems() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for ss := range s.sessions {
		m := ss.mode()
		if (m == "transceiver" || m == "receiver") && !slices.Contains(ids, ss.systemID()) {
			ids = append(ids, ss.systemID())
		}
	}
	slices.Sort(ids)
	return ids
}

// InjectRaw writes b, as is, to every bound session: for malformed PDUs.
func (s *Sim) InjectRaw(b []byte) error {
	s.mu.Lock()
	var all []*session
	for ss := range s.sessions {
		if ss.mode() != "" {
			all = append(all, ss)
		}
	}
	s.mu.Unlock()
	if len(all) == 0 {
		return errors.New("smscsim: no bound session")
	}
	for _, ss := range all {
		ss.write(b)
	}
	return nil
}

func (s *Sim) newMessageID() uint64 { return s.nextID.Add(1) }

func (s *Sim) formatID(n uint64, style string) string {
	switch {
	case style == "hex-lower":
		return fmt.Sprintf("%x", n)
	case style == "decimal" && s.cfg.ShortIDs:
		return fmt.Sprintf("%d", n)
	case style == "decimal":
		return fmt.Sprintf("%012d", n)
	default:
		return fmt.Sprintf("%X", n)
	}
}

// statMixed cycles receipt outcomes by message id.
const statMixed = "MIXED"

// receiptStat is the outcome of message n's receipt.
func (s *Sim) receiptStat(n uint64) string {
	if s.cfg.ReceiptStat != statMixed {
		return s.cfg.ReceiptStat
	}
	return [...]string{"DELIVRD", "UNDELIV", "EXPIRED"}[n%3]
}

func sleepOrClosed(closed <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-closed:
		return false
	}
}

// rejected reports whether dest (digits, maybe with '+') is refused.
func (s *Sim) rejected(dest string) bool {
	d := strings.TrimPrefix(dest, "+")
	for _, p := range s.cfg.RejectPrefixes {
		if strings.HasPrefix(d, strings.TrimPrefix(p, "+")) {
			return true
		}
	}
	return false
}

// throttle reports whether this submit is one to refuse.
func (s *Sim) throttle() bool {
	n := s.throttleEvery.Load()
	if n <= 0 {
		return false
	}
	return s.submitN.Add(1)%n == 0
}

// Faults are the fault modes that can change while the simulator runs;
// nil fields stay as they are.
type Faults struct {
	ReceiptBeforeResp *bool `json:"receipt_before_resp,omitempty"`
	ResetAfter        *int  `json:"reset_after,omitempty"`
	CollideSeq        *bool `json:"collide_seq,omitempty"`
}

// SetFaults changes the fault modes f sets, for the submits that come
// next, and returns them all as they now are.
func (s *Sim) SetFaults(f Faults) Faults {
	if f.ReceiptBeforeResp != nil {
		s.receiptFirst.Store(*f.ReceiptBeforeResp)
	}
	if f.ResetAfter != nil {
		s.resetAfter.Store(int64(max(*f.ResetAfter, 0)))
	}
	if f.CollideSeq != nil {
		s.collideSeq.Store(*f.CollideSeq)
	}
	rb, cs, ra := s.receiptFirst.Load(), s.collideSeq.Load(), int(s.resetAfter.Load())
	return Faults{ReceiptBeforeResp: &rb, ResetAfter: &ra, CollideSeq: &cs}
}
