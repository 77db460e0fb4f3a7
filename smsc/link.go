package smsc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"
	"golang.org/x/time/rate"

	"github.com/phonebook/phonebook/smsc/internal/wire"
)

// Bind modes.
const (
	BindTransceiver        = "transceiver"          // one connection carries submits and deliveries
	BindTransmitterReceive = "transmitter+receiver" // two connections: TX for submits, RX for deliveries
)

// LinkConfig configures one SMPP account at one SMSC. Zero values mean the
// defaults documented in docs/smsc.md, filled in by withDefaults.
type LinkConfig struct {
	Name       string // used in logs, metrics and SubmitResult.Link
	Addr       string // host:port
	SystemID   string
	Password   string
	SystemType string
	Bind       string // BindTransceiver (default) or BindTransmitterReceive

	// SourceAddr is the sender shown on handsets. Unless SourceTONNPISet
	// (or SourceTON or SourceNPI is not 0), TON/NPI follow its form:
	// "+<digits>" or more than 8 digits → international (1/1, '+'
	// dropped); up to 8 digits → a short code (3/0); anything else →
	// alphanumeric (5/0).
	SourceAddr           string
	SourceTON, SourceNPI uint8
	// SourceTONNPISet makes SourceTON and SourceNPI apply as given, even
	// 0/0 (config sets it when source_ton or source_npi is present).
	SourceTONNPISet bool

	TLS                   bool
	TLSServerName         string // default: the host part of Addr
	TLSInsecureSkipVerify bool

	// Binds: operators allow several binds per account. Each is a session
	// (with transmitter+receiver, a transmitter and a receiver) with its own
	// window; a submit goes to the bound session with the fewest outstanding.
	Window       int           // outstanding submits per bind; default 10; a full window waits
	Binds        int           // sessions to the SMSC; default 1
	MaxTPS       float64       // submits per second; 0 = unlimited
	EnquireLink  time.Duration // keep-alive interval; default 30s
	RespTimeout  time.Duration // wait for any response; default 5s
	ReconnectMin time.Duration // first reconnect delay; default 1s
	ReconnectMax time.Duration // backoff ceiling; default 60s

	// Prefixes are the E.164 destination prefixes ("+86", "+8613") this link
	// serves; the longest match wins. Empty = default route.
	Prefixes []string

	// ReceiptIDs says how this SMSC's receipts write the message ids its
	// submit_sm_resp gave: ReceiptIDsAuto (default), ReceiptIDsExact,
	// ReceiptIDsHex or ReceiptIDsDecimal; see receipt_ids.go.
	ReceiptIDs string

	// DeliverWorkers bounds concurrent DeliverHandler calls per connection
	// (default 128); DeliverQueue bounds deliver_sm waiting for a worker
	// (default 1024). A deliver_sm arriving at a full queue is answered
	// ESME_RX_T_APPN so that the SMSC delivers it again later.
	DeliverWorkers int
	DeliverQueue   int
}

// DefaultLinkConfig returns the defaults of a link's optional settings.
func DefaultLinkConfig() LinkConfig {
	c, _ := LinkConfig{Name: "default", Addr: "localhost:2775"}.withDefaults()
	c.Name, c.Addr = "", ""
	return c
}

// Validate reports what NewRouter refuses in a link's configuration.
func (c LinkConfig) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults fills in defaults and validates; it is the one place that
// knows them.
func (c LinkConfig) withDefaults() (LinkConfig, error) {
	if c.Name == "" {
		return c, errors.New("smsc link: name is required")
	}
	if c.Addr == "" {
		return c, fmt.Errorf("smsc %s: addr is required", c.Name)
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return c, fmt.Errorf("smsc %s: addr %q: %v", c.Name, c.Addr, err)
	}
	switch c.Bind {
	case "":
		c.Bind = BindTransceiver
	case BindTransceiver, BindTransmitterReceive:
	default:
		return c, fmt.Errorf("smsc %s: bind %q: want %q or %q", c.Name, c.Bind, BindTransceiver, BindTransmitterReceive)
	}
	switch c.ReceiptIDs {
	case "":
		c.ReceiptIDs = ReceiptIDsAuto
	case ReceiptIDsAuto, ReceiptIDsExact, ReceiptIDsHex, ReceiptIDsDecimal:
	default:
		return c, fmt.Errorf("smsc %s: receipt_ids %q: want %s, %s, %s or %s", c.Name, c.ReceiptIDs,
			ReceiptIDsAuto, ReceiptIDsExact, ReceiptIDsHex, ReceiptIDsDecimal)
	}
	if c.TLS && c.TLSServerName == "" {
		c.TLSServerName = host
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Window <= 0 {
		c.Window = 10
	}
	if c.Binds <= 0 {
		c.Binds = 1
	}
	if c.Binds > MaxBinds {
		return c, fmt.Errorf("smsc %s: binds %d: at most %d", c.Name, c.Binds, MaxBinds)
	}
	if c.MaxTPS < 0 {
		return c, fmt.Errorf("smsc %s: max_tps %v is negative", c.Name, c.MaxTPS)
	}
	def(&c.EnquireLink, 30*time.Second)
	def(&c.RespTimeout, 5*time.Second)
	def(&c.ReconnectMin, time.Second)
	def(&c.ReconnectMax, 60*time.Second)
	if c.ReconnectMax < c.ReconnectMin {
		c.ReconnectMax = c.ReconnectMin
	}
	if c.DeliverWorkers <= 0 {
		c.DeliverWorkers = 128
	}
	if c.DeliverQueue <= 0 {
		c.DeliverQueue = 1024
	}
	for _, p := range c.Prefixes {
		if len(p) < 2 || p[0] != '+' || strings.Trim(p[1:], "0123456789") != "" {
			return c, fmt.Errorf("smsc %s: prefix %q: want '+' and digits, like \"+86\"", c.Name, p)
		}
	}
	return c, nil
}

// Sentinel causes inside temporary SubmitErrors.
var (
	ErrNotBound    = errors.New("link not bound")
	ErrRespTimeout = errors.New("no response from SMSC in time")
	ErrLinkClosed  = errors.New("link closed while waiting for a response")
	ErrNotWritten  = errors.New("link closed before the request was written")
	ErrNoLinkBound = errors.New("no SMSC link bound for this destination")
	ErrNoRoute     = errors.New("no SMSC link routes this destination")
)

// MaxBinds bounds LinkConfig.Binds: operators grant a handful of binds per
// account, and each costs a connection and its goroutines.
const MaxBinds = 64

// handlerTimeout bounds one DeliverHandler call; a handler that overruns is
// answered ESME_RX_T_APPN and the SMSC delivers again.
const handlerTimeout = 30 * time.Second

// Link is one SMPP account: Binds transceiver connections, or Binds
// transmitters and as many receivers, each reconnecting on its own.
type Link struct {
	cfg     LinkConfig
	handler DeliverHandler
	log     *slog.Logger
	m       *metrics
	limiter *rate.Limiter // nil = unlimited
	tx      []*conn       // carry submits
	conns   []*conn

	mu       sync.Mutex
	closing  bool
	cancel   context.CancelFunc
	inflight int             // outstanding submits over all tx; each conn counts its own
	waiters  []chan struct{} // submits waiting for room in a window, oldest first
	idle     chan struct{}   // closed when inflight drops to 0 while closing
	wg       sync.WaitGroup  // connection loops
	// handlers tracks deliver workers, which may outlive their session by a
	// handler call; Add happens only inside a connection loop.
	handlers sync.WaitGroup
}

func newLink(cfg LinkConfig, h DeliverHandler, log *slog.Logger, m *metrics) (*Link, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Link{
		cfg:     cfg,
		handler: h,
		log:     log.With("link", cfg.Name),
		m:       m,
	}
	if cfg.MaxTPS > 0 {
		burst := max(1, int(cfg.MaxTPS/10)) // a tenth of a second's worth
		l.limiter = rate.NewLimiter(rate.Limit(cfg.MaxTPS), burst)
	}
	role := func(r string, i int) string {
		if cfg.Binds == 1 {
			return r
		}
		return fmt.Sprintf("%s-%d", r, i+1)
	}
	for i := range cfg.Binds {
		if cfg.Bind == BindTransmitterReceive {
			tx := &conn{link: l, role: role("transmitter", i), bindID: pdu.BindTransmitterID}
			l.tx = append(l.tx, tx)
			l.conns = append(l.conns, tx, &conn{link: l, role: role("receiver", i), bindID: pdu.BindReceiverID})
		} else {
			tx := &conn{link: l, role: role("transceiver", i), bindID: pdu.BindTransceiverID}
			l.tx = append(l.tx, tx)
			l.conns = append(l.conns, tx)
		}
	}
	m.up.WithLabelValues(cfg.Name).Set(0)
	m.window.WithLabelValues(cfg.Name).Set(0)
	return l, nil
}

// start runs the connection loops until ctx ends or close is called.
func (l *Link) start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	l.mu.Lock()
	l.cancel = cancel
	l.mu.Unlock()
	for _, c := range l.conns {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			c.run(ctx)
		}()
	}
}

// close stops accepting submits, waits (up to RespTimeout) for outstanding
// ones, unbinds every connection and stops reconnecting.
func (l *Link) close() {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return
	}
	l.closing = true
	cancel := l.cancel
	idle := make(chan struct{})
	if l.inflight == 0 {
		close(idle)
	} else {
		l.idle = idle
	}
	l.wakeAllLocked() // waiting submits give up
	l.mu.Unlock()

	// Wait for outstanding submits.
	drain := time.NewTimer(l.cfg.RespTimeout)
	select {
	case <-idle:
	case <-drain.C:
	}
	drain.Stop()
	if cancel != nil {
		cancel()
	}
	var wg sync.WaitGroup
	for _, c := range l.conns {
		wg.Go(c.shutdown)
	}
	wg.Wait()
	l.wg.Wait()
	l.handlers.Wait()
}

// bound reports whether submits can be sent now: some transmitting
// session is bound.
func (l *Link) bound() bool {
	for _, c := range l.tx {
		if c.session() != nil {
			return true
		}
	}
	return false
}

// acquire waits for room in the window of a bound transmitting session and
// takes it: the session with the fewest outstanding submits. It fails at
// once when none is bound, and when ctx ends or the link closes first.
func (l *Link) acquire(ctx context.Context) (*conn, *session, error) {
	for {
		l.mu.Lock()
		if l.closing {
			l.mu.Unlock()
			return nil, nil, ErrNotBound
		}
		var best *conn
		var bs *session
		anyBound := false
		for _, c := range l.tx {
			s := c.session()
			if s == nil {
				continue
			}
			anyBound = true
			if c.inflight < l.cfg.Window && (best == nil || c.inflight < best.inflight) {
				best, bs = c, s
			}
		}
		if best != nil {
			best.inflight++
			l.inflight++
			l.mu.Unlock()
			return best, bs, nil
		}
		if !anyBound {
			l.mu.Unlock()
			return nil, nil, ErrNotBound
		}
		wake := make(chan struct{}, 1)
		l.waiters = append(l.waiters, wake)
		l.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			l.mu.Lock()
			if i := slices.Index(l.waiters, wake); i >= 0 {
				l.waiters = slices.Delete(l.waiters, i, i+1)
			} else {
				l.wakeOneLocked() // pass on the room we were woken for
			}
			l.mu.Unlock()
			return nil, nil, ctx.Err()
		}
	}
}

// release gives back the room acquire took.
func (l *Link) release(c *conn) {
	l.mu.Lock()
	c.inflight--
	l.inflight--
	if l.inflight == 0 && l.idle != nil {
		close(l.idle)
		l.idle = nil
	}
	l.wakeOneLocked()
	l.mu.Unlock()
}

func (l *Link) wakeOneLocked() {
	if len(l.waiters) > 0 {
		l.waiters[0] <- struct{}{}
		l.waiters = l.waiters[1:]
	}
}

// wakeAll makes every waiting submit look again: a session was bound (more
// room) or lost (maybe none is left, and they must fail).
func (l *Link) wakeAll() {
	l.mu.Lock()
	l.wakeAllLocked()
	l.mu.Unlock()
}

func (l *Link) wakeAllLocked() {
	for _, w := range l.waiters {
		w <- struct{}{}
	}
	l.waiters = nil
}

// State reports the link for /readyz: bound only when every connection is.
func (l *Link) State() LinkState {
	l.mu.Lock()
	inflight := l.inflight
	l.mu.Unlock()
	st := LinkState{Name: l.cfg.Name, Addr: l.cfg.Addr, Bound: true, Window: l.cfg.Window, Binds: l.cfg.Binds, InFlight: inflight}
	for _, c := range l.tx {
		if c.session() != nil {
			st.Sessions++
		}
	}
	for _, c := range l.conns {
		c.mu.Lock()
		if c.cur == nil {
			st.Bound = false
		}
		if st.Since.IsZero() || c.since.After(st.Since) {
			st.Since = c.since
		}
		if c.lastErr != "" {
			st.LastError = c.lastErr
		}
		c.mu.Unlock()
	}
	return st
}

// Submit sends one part and waits for the SMSC's answer. It goes to the
// bound session with the most room; a full window waits (as does MaxTPS),
// honouring ctx. Once the PDU is written it waits for the
// response (at most RespTimeout) even if ctx ends, so that a shutdown does
// not turn accepted submits into duplicates.
func (l *Link) Submit(ctx context.Context, p Part) (SubmitResult, error) {
	name := l.cfg.Name
	l.mu.Lock()
	closing := l.closing
	l.mu.Unlock()
	if closing {
		return SubmitResult{}, &SubmitError{Link: name, Temporary: true, Err: ErrNotBound}
	}
	sm, err := l.encodePart(p)
	if err != nil {
		l.m.submits.WithLabelValues(name, "invalid").Inc()
		return SubmitResult{}, &SubmitError{Link: name, Err: err}
	}
	c, s, err := l.acquire(ctx)
	if err != nil {
		if errors.Is(err, ErrNotBound) {
			l.m.submits.WithLabelValues(name, "not_bound").Inc()
		}
		return SubmitResult{}, &SubmitError{Link: name, Temporary: true, Err: err}
	}
	l.m.window.WithLabelValues(name).Inc()
	defer func() {
		l.release(c)
		l.m.window.WithLabelValues(name).Dec()
	}()
	if l.limiter != nil {
		if err := l.limiter.Wait(ctx); err != nil {
			return SubmitResult{}, &SubmitError{Link: name, Temporary: true, Err: err}
		}
	}
	resp, err := s.request(pdu.SubmitSMID, func(seq uint32) ([]byte, error) {
		return wire.EncodeSM(pdu.SubmitSMID, seq, sm)
	})
	if err != nil {
		result, sent := "link_down", true
		switch {
		case errors.Is(err, ErrRespTimeout):
			result = "timeout"
		case errors.Is(err, ErrNotWritten):
			result, sent = "not_sent", false
		}
		l.m.submits.WithLabelValues(name, result).Inc()
		return SubmitResult{}, &SubmitError{Link: name, Temporary: true, Sent: sent, Err: err}
	}
	if st := uint32(resp.Header.Status); st != 0 || resp.Header.ID == pdu.GenericNACKID {
		l.m.submits.WithLabelValues(name, StatusName(st)).Inc()
		if st == 0 { // generic_nack with status 0: the SMSC did not understand us
			st = uint32(wire.StatusSysErr)
		}
		return SubmitResult{}, &SubmitError{Link: name, Status: st, Temporary: TemporaryStatus(st)}
	}
	l.m.submits.WithLabelValues(name, "ESME_ROK").Inc()
	id := wire.RespString(resp.Body)
	if id == "" {
		l.log.Warn("submit_sm_resp without message_id: no receipt can be matched")
	}
	return SubmitResult{Link: name, MessageID: id}, nil
}

func (l *Link) encodePart(p Part) (wire.SM, error) {
	dest := strings.TrimPrefix(string(p.Dest), "+")
	if dest == "" || strings.Trim(dest, "0123456789") != "" {
		return wire.SM{}, fmt.Errorf("destination %q is not an E.164 number", p.Dest)
	}
	if len(p.Payload) > 254 {
		return wire.SM{}, fmt.Errorf("payload is %d bytes; one part holds at most 254", len(p.Payload))
	}
	addr := l.cfg.SourceAddr
	if p.Source != "" {
		addr = p.Source
	}
	src, ton, npi := sourceAddress(addr, l.cfg.SourceTON, l.cfg.SourceNPI, l.cfg.SourceTONNPISet)
	sm := wire.SM{
		SourceTON:    ton,
		SourceNPI:    npi,
		Source:       src,
		DestTON:      1,
		DestNPI:      1,
		Dest:         dest,
		ESMClass:     p.ESMClass,
		DataCoding:   p.DataCoding,
		ShortMessage: p.Payload,
	}
	if p.RegisteredDelivery {
		sm.RegisteredDelivery = 1
	}
	if p.Validity > 0 {
		sm.ValidityPeriod = relativeTime(p.Validity)
	}
	return sm, nil
}

// sourceAddress picks TON/NPI for a sender address; see LinkConfig.SourceAddr.
func sourceAddress(addr string, ton, npi uint8, explicit bool) (string, uint8, uint8) {
	digits := strings.TrimPrefix(addr, "+")
	allDigits := digits != "" && strings.Trim(digits, "0123456789") == ""
	if explicit || ton != 0 || npi != 0 {
		if allDigits {
			return digits, ton, npi
		}
		return addr, ton, npi
	}
	switch {
	case addr == "":
		return "", 0, 0
	case allDigits && (strings.HasPrefix(addr, "+") || len(digits) > 8):
		return digits, 1, 1
	case allDigits:
		return digits, 3, 0
	default:
		return addr, 5, 0
	}
}

// relativeTime formats d as an SMPP relative time "YYMMDDhhmmss000R".
func relativeTime(d time.Duration) string {
	s := int64(d / time.Second)
	days := min(s/86400, 99)
	s -= days * 86400
	if days == 99 {
		s = 0
	}
	return fmt.Sprintf("0000%02d%02d%02d%02d000R", days, s/3600, s%3600/60, s%60)
}

// refreshUp sets the link-up gauge: 1 only when every connection is bound.
func (l *Link) refreshUp() {
	up := 1.0
	for _, c := range l.conns {
		if c.session() == nil {
			up = 0
		}
	}
	l.m.up.WithLabelValues(l.cfg.Name).Set(up)
}
