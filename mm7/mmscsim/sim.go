// Package mmscsim is an MMSC simulator: a real HTTP server speaking MM7
// (3GPP TS 23.140) to a VASP. It accepts SubmitReq, records each message
// with its parts, answers SubmitRsp with message ids in a configurable
// style, sends DeliveryReportReq to the VASP's MM7 endpoint and injects
// mobile-originated MMS (DeliverReq). It misbehaves on purpose as real MMSCs
// do: slow answers, HTTP 5xx, SOAP faults, "not MMS-capable" recipients,
// dropped connections, connections reset after accepting a message (its
// SubmitRsp lost), delivery reports that arrive before the SubmitRsp, short
// or odd message ids, and going down altogether. Go tests drive it through
// its methods; `phonebook mmsc-sim` runs it for people.
package mmscsim

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
	"github.com/phonebook/phonebook/mm7"
)

// Config configures a simulator. Zero values are the defaults noted.
type Config struct {
	Username string // HTTP basic auth the VASP must present; "" = any
	Password string

	// VASPURL is the VASP's MM7 endpoint, where delivery reports and MO
	// messages go; "" = nowhere (reports are not sent, InjectMO fails).
	VASPURL      string
	VASPUsername string // basic auth toward the VASP
	VASPPassword string
	Version      string      // schema of the requests the simulator sends; default mm7.REL5
	VASPTLS      *tls.Config // for an https VASPURL
	MaxBytes     int64       // SubmitReq body limit; default 8 MiB

	ReportDelay time.Duration // from accepting a message to its delivery reports; 0 = at once
	// ReportStatus is every report's MMStatus: Retrieved (default),
	// Rejected, Expired, Indeterminate, Forwarded, Deferred; or MIXED:
	// Retrieved, Rejected and Expired in turn by message.
	ReportStatus string
	// ReportBeforeResp sends a message's delivery reports (first attempt)
	// before writing its SubmitRsp, as some MMSCs manage to.
	ReportBeforeResp bool
	// RedeliverAfter is the wait before a report the VASP did not take is
	// sent again (at most ReportAttempts times, default 10); default 1s.
	RedeliverAfter time.Duration
	ReportAttempts int

	// RespDelay holds back every SubmitRsp (a slow MMSC); with RespDelayMax
	// above it, each waits a random time between the two.
	RespDelay    time.Duration
	RespDelayMax time.Duration
	// DropEvery closes every Nth request's connection without an answer,
	// before reading it (the message is not taken). 0 = never.
	DropEvery int
	// HTTPErrorEvery answers every Nth request with HTTPErrorStatus
	// (default 503) and no SOAP. 0 = never.
	HTTPErrorEvery  int
	HTTPErrorStatus int
	// FaultEvery answers every Nth request with a SOAP fault carrying
	// FaultCode (default 3000 Server error). 0 = never.
	FaultEvery int
	FaultCode  int
	// ResetEvery resets the connection (TCP RST) after every Nth accepted
	// message: the message is taken, its reports follow, its SubmitRsp is
	// lost. 0 = never.
	ResetEvery int
	// NotCapablePrefixes: recipients starting with one of these cannot take
	// MMS; a message to one is answered with NotCapableCode (default 2002
	// Address Error) and details "recipient ... is not MMS capable".
	NotCapablePrefixes []string
	NotCapableCode     int
	// NotCapableText replaces the answer's details, for an MMSC whose
	// answer says nothing of capability (only its code tells); "{to}"
	// stands for the recipient.
	NotCapableText string
	// Keep is how many of the newest submissions and reports the simulator
	// keeps (with their parts) for Submissions, Reports and GET
	// /submissions; older ones are forgotten, counted in Stats. Default 1000.
	Keep int
	// MessageIDStyle: "hex" (default, 16 hex digits), "short" (1, 2, 3 ...)
	// or "odd" (with spaces inside, XML specials and non-ASCII).
	MessageIDStyle string
	// RepeatMOEvery sends every Nth MO twice under one TransactionID, as
	// an MMSC does when the VASP's answer to a DeliverReq was lost: the
	// VASP must not deliver it twice. 0 = never.
	RepeatMOEvery int

	TLS    *tls.Config  // serve MM7 over TLS only
	Output io.Writer    // every message received is printed here; nil = nowhere
	Log    *slog.Logger // nil = discard
}

// Validate reports configuration values the simulator does not know.
func (c Config) Validate() error {
	switch c.MessageIDStyle {
	case "", "hex", "short", "odd":
	default:
		return fmt.Errorf("message id style %q: want hex, short or odd", c.MessageIDStyle)
	}
	if c.ReportStatus != "" && !strings.EqualFold(c.ReportStatus, "MIXED") && canonicalMMStatus(c.ReportStatus) == "" {
		return fmt.Errorf("report status %q: want one of %s or MIXED", c.ReportStatus, strings.Join(mmStatuses, ", "))
	}
	for _, n := range []int{c.DropEvery, c.HTTPErrorEvery, c.FaultEvery, c.ResetEvery, c.ReportAttempts} {
		if n < 0 {
			return errors.New("every-N and attempt counts must be 0 or more")
		}
	}
	if c.HTTPErrorStatus != 0 && (c.HTTPErrorStatus < 400 || c.HTTPErrorStatus > 599) {
		return fmt.Errorf("http error status %d: want 400-599", c.HTTPErrorStatus)
	}
	if c.VASPURL != "" {
		if err := (mm7.ClientConfig{URL: c.VASPURL, Version: c.Version}).Validate(); err != nil {
			return fmt.Errorf("vasp url: %w", err)
		}
	}
	return nil
}

var mmStatuses = []string{"Retrieved", "Rejected", "Expired", "Indeterminate", "Forwarded", "Deferred", "Unrecognised"}

func canonicalMMStatus(s string) string {
	for _, m := range mmStatuses {
		if strings.EqualFold(s, m) {
			return m
		}
	}
	return ""
}

// Submission is one accepted SubmitReq.
type Submission struct {
	TransactionID  string     `json:"transaction_id"`
	MessageID      string     `json:"message_id"`
	Version        string     `json:"version"`
	VASPID         string     `json:"vasp_id"`
	VASID          string     `json:"vas_id"`
	ServiceCode    string     `json:"service_code,omitempty"`
	Sender         string     `json:"sender"`
	To             []string   `json:"to"`
	Subject        string     `json:"subject,omitempty"`
	LinkedID       string     `json:"linked_id,omitempty"`
	DeliveryReport bool       `json:"delivery_report"`
	SMIL           string     `json:"smil,omitempty"`
	Parts          []mm7.Part `json:"parts"`
	Bytes          int        `json:"bytes"` // the HTTP body's size
	Time           time.Time  `json:"time"`
	// ResponseLost: the connection was reset after the message was taken
	// (ResetEvery), so the VASP never saw its SubmitRsp.
	ResponseLost bool `json:"response_lost,omitempty"`
}

// Report is a delivery report the simulator sent (or is sending).
type Report struct {
	MessageID string     `json:"message_id"`
	Recipient string     `json:"recipient"`
	MMStatus  string     `json:"mm_status"`
	Attempts  int        `json:"attempts"`
	Status    mm7.Status `json:"status"` // the VASP's last answer
	Error     string     `json:"error,omitempty"`
	Done      bool       `json:"done"` // the VASP answered it (success or a permanent failure), or attempts ran out
}

// Stats counts what the simulator has seen and done.
type Stats struct {
	Requests      int64 `json:"requests"`
	Submits       int64 `json:"submits"`      // accepted
	Duplicates    int64 `json:"duplicates"`   // accepted with a TransactionID seen before
	BadRequests   int64 `json:"bad_requests"` // answered with a fault for malformed input
	Unauthorized  int64 `json:"unauthorized"`
	Dropped       int64 `json:"dropped"`        // DropEvery
	HTTPErrors    int64 `json:"http_errors"`    // HTTPErrorEvery
	Faults        int64 `json:"faults"`         // FaultEvery
	Resets        int64 `json:"resets"`         // ResetEvery: accepted, response lost
	NotCapable    int64 `json:"not_capable"`    // refused as not MMS-capable
	ReportsSent   int64 `json:"reports_sent"`   // taken by the VASP (1xxx)
	ReportsFailed int64 `json:"reports_failed"` // attempts the VASP refused or did not answer
	MOs           int64 `json:"mos"`            // DeliverReq the VASP took
	MOsFailed     int64 `json:"mos_failed"`
	MOsRepeated   int64 `json:"mos_repeated"` // RepeatMOEvery: sent again under the same TransactionID
}

// Sim is a running simulator.
type Sim struct {
	cfg  Config
	log  *slog.Logger
	vasp *mm7.Client // nil without VASPURL

	closed chan struct{}
	ctx    context.Context // canceled by Close: requests to the VASP stop
	cancel context.CancelFunc
	wg     sync.WaitGroup

	reqN, acceptedN, nextID atomic.Int64
	moN                     atomic.Int64
	dropEvery, httpErrEvery atomic.Int64
	httpErrStatus           atomic.Int64
	faultEvery, faultCode   atomic.Int64
	resetEvery              atomic.Int64
	respDelay               atomic.Pointer[simctl.DelayRange]

	srvMu   sync.Mutex
	addr    string
	srv     *http.Server // nil while down
	ctrlSrv *http.Server

	mu          sync.Mutex
	submissions []Submission   // the newest Keep
	submitted   int            // ever accepted; submissions holds the last of them
	txIDs       map[string]int // of the kept submissions, how many have each TransactionID
	reports     []*Report      // the newest Keep
	notCapable  []string
	changed     chan struct{} // closed and replaced whenever submissions or reports change
	stats       Stats
}

// New returns a simulator; Start listens.
func New(cfg Config) *Sim {
	if cfg.Version == "" {
		cfg.Version = mm7.REL5
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 8 << 20
	}
	if cfg.ReportStatus == "" {
		cfg.ReportStatus = "Retrieved"
	}
	if cfg.RedeliverAfter <= 0 {
		cfg.RedeliverAfter = time.Second
	}
	if cfg.ReportAttempts == 0 {
		cfg.ReportAttempts = 10
	}
	if cfg.HTTPErrorStatus == 0 {
		cfg.HTTPErrorStatus = http.StatusServiceUnavailable
	}
	if cfg.FaultCode == 0 {
		cfg.FaultCode = mm7.StatusServerError
	}
	if cfg.NotCapableCode == 0 {
		cfg.NotCapableCode = mm7.StatusAddressError
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 1000
	}
	if cfg.MessageIDStyle == "" {
		cfg.MessageIDStyle = "hex"
	}
	if cfg.Output == nil {
		cfg.Output = io.Discard
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Sim{
		cfg:        cfg,
		log:        cfg.Log,
		closed:     make(chan struct{}),
		txIDs:      make(map[string]int),
		changed:    make(chan struct{}),
		notCapable: append([]string(nil), cfg.NotCapablePrefixes...),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if cfg.VASPURL != "" {
		s.vasp = mm7.NewClient(mm7.ClientConfig{URL: cfg.VASPURL, Username: cfg.VASPUsername, Password: cfg.VASPPassword,
			Version: cfg.Version, TLS: cfg.VASPTLS, Timeout: 10 * time.Second})
	}
	s.dropEvery.Store(int64(cfg.DropEvery))
	s.httpErrEvery.Store(int64(cfg.HTTPErrorEvery))
	s.httpErrStatus.Store(int64(cfg.HTTPErrorStatus))
	s.faultEvery.Store(int64(cfg.FaultEvery))
	s.faultCode.Store(int64(cfg.FaultCode))
	s.resetEvery.Store(int64(cfg.ResetEvery))
	s.respDelay.Store(simctl.NewDelayRange(cfg.RespDelay, cfg.RespDelayMax))
	return s
}

// Start serves MM7 on addr ("127.0.0.1:0" picks a port), on every path.
func (s *Sim) Start(addr string) error {
	if err := s.cfg.Validate(); err != nil {
		return fmt.Errorf("mmscsim: %w", err)
	}
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return s.listen(addr)
}

// listen starts the MM7 server; srvMu is held.
func (s *Sim) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("mmscsim: %w", err)
	}
	if s.cfg.TLS != nil {
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	s.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(s.serveMM7), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute}
	s.srv = srv
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("mmscsim: serve", "err", err)
		}
	}()
	return nil
}

// Addr is the MM7 listening address.
func (s *Sim) Addr() string {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return s.addr
}

// URL is the MM7 endpoint to configure a VASP with.
func (s *Sim) URL() string {
	scheme := "http"
	if s.cfg.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + s.Addr() + "/mm7"
}

// SetDown takes the MMSC down (true: the listener and every connection
// closed, connections refused) or brings it back on the same address.
func (s *Sim) SetDown(down bool) error {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	select {
	case <-s.closed:
		return errors.New("mmscsim: closed")
	default:
	}
	switch {
	case down && s.srv != nil:
		s.srv.Close()
		s.srv = nil
	case !down && s.srv == nil:
		return s.listen(s.addr)
	}
	return nil
}

// Down reports whether the MMSC is down.
func (s *Sim) Down() bool {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return s.srv == nil
}

// Close stops serving and sending; reports not yet sent are dropped.
func (s *Sim) Close() {
	s.srvMu.Lock() // goReport adds to wg under it, never after this
	select {
	case <-s.closed:
		s.srvMu.Unlock()
		return
	default:
	}
	close(s.closed)
	s.cancel()
	for _, srv := range []*http.Server{s.srv, s.ctrlSrv} {
		if srv != nil {
			srv.Close()
		}
	}
	s.srv = nil
	s.srvMu.Unlock()
	s.wg.Wait()
	if s.vasp != nil {
		s.vasp.Close()
	}
}

// SetRespDelayRange holds back each SubmitRsp by a random time in [lo, hi].
func (s *Sim) SetRespDelayRange(lo, hi time.Duration) {
	s.respDelay.Store(simctl.NewDelayRange(lo, hi))
}

// SetDropEvery, SetHTTPErrorEvery, SetFaultEvery and SetResetEvery change
// the fault modes at run time (see Config); 0 turns one off.
func (s *Sim) SetDropEvery(n int) { s.dropEvery.Store(int64(max(n, 0))) }

// SetHTTPErrorEvery answers every nth request with HTTP status (0 = keep).
func (s *Sim) SetHTTPErrorEvery(n, status int) {
	s.httpErrEvery.Store(int64(max(n, 0)))
	if status >= 400 && status <= 599 {
		s.httpErrStatus.Store(int64(status))
	}
}

// SetFaultEvery answers every nth request with a SOAP fault with code (0 = keep).
func (s *Sim) SetFaultEvery(n, code int) {
	s.faultEvery.Store(int64(max(n, 0)))
	if code > 0 {
		s.faultCode.Store(int64(code))
	}
}

// SetResetEvery resets the connection after every nth accepted message.
func (s *Sim) SetResetEvery(n int) { s.resetEvery.Store(int64(max(n, 0))) }

// SetNotCapable replaces the not-MMS-capable prefixes.
func (s *Sim) SetNotCapable(prefixes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.notCapable = append([]string(nil), prefixes...)
}

func (s *Sim) isNotCapable(to string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.notCapable {
		if p != "" && (strings.HasPrefix(to, p) || strings.HasPrefix(strings.TrimPrefix(to, "+"), strings.TrimPrefix(p, "+"))) {
			return true
		}
	}
	return false
}

// Stats is a snapshot of the counters.
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Sim) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}

// Submissions is the accepted messages (the newest Config.Keep), in order.
func (s *Sim) Submissions() []Submission {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.submissions[max(len(s.submissions)-s.cfg.Keep, 0):])
}

// Reports is the delivery reports sent or being sent (the newest
// Config.Keep), in order.
func (s *Sim) Reports() []Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	kept := s.reports[max(len(s.reports)-s.cfg.Keep, 0):]
	out := make([]Report, len(kept))
	for i, r := range kept {
		out[i] = *r
	}
	return out
}

// WaitSubmissions waits until at least n messages were accepted in all,
// and returns the kept ones.
func (s *Sim) WaitSubmissions(ctx context.Context, n int) ([]Submission, error) {
	for {
		s.mu.Lock()
		if s.submitted >= n {
			out := slices.Clone(s.submissions[max(len(s.submissions)-s.cfg.Keep, 0):])
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("mmscsim: waiting for %d submissions: %w", n, ctx.Err())
		case <-s.closed:
			return nil, errors.New("mmscsim: closed")
		}
	}
}

// record keeps an accepted submission; mu is held.
func (s *Sim) record(rec Submission) {
	if s.txIDs[rec.TransactionID] > 0 {
		s.stats.Duplicates++
	}
	s.txIDs[rec.TransactionID]++
	s.submissions = append(s.submissions, rec)
	if n := len(s.submissions); n >= 2*s.cfg.Keep { // forget in batches: amortised O(1)
		for _, old := range s.submissions[:n-s.cfg.Keep] {
			if s.txIDs[old.TransactionID]--; s.txIDs[old.TransactionID] <= 0 {
				delete(s.txIDs, old.TransactionID)
			}
		}
		s.submissions = slices.Clone(s.submissions[n-s.cfg.Keep:])
	}
	s.submitted++
	s.stats.Submits++
	s.notify()
}

// notify wakes waiters; mu is held.
func (s *Sim) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Sim) newMessageID() (string, int64) {
	n := s.nextID.Add(1)
	switch s.cfg.MessageIDStyle {
	case "short":
		return fmt.Sprint(n), n
	case "odd":
		return fmt.Sprintf("MMSC:%04d / α&<β> #%d", n, n), n
	}
	return fmt.Sprintf("%016X", uint64(0x5E1A000000000000)+uint64(n)), n
}

// ParseDelayRange reads "5ms" or "1ms-20ms".
func ParseDelayRange(v string) (lo, hi time.Duration, err error) { return simctl.ParseDelayRange(v) }

// sleep waits d unless the simulator closes first (false then).
func (s *Sim) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closed:
		return false
	}
}
