package smsc_test

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

const (
	cnMobile = phonebook.MSISDN("+8613800138000")
	cnFixed  = phonebook.MSISDN("+861062345678")
	usMobile = phonebook.MSISDN("+14155550100")
)

func startSim(t testing.TB, cfg smscsim.Config) *smscsim.Sim {
	t.Helper()
	sim := smscsim.New(cfg)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	return sim
}

func linkCfg(name, addr string) smsc.LinkConfig {
	return smsc.LinkConfig{
		Name:         name,
		Addr:         addr,
		SystemID:     "phonebook",
		Password:     "secret",
		SourceAddr:   "Phonebook",
		RespTimeout:  2 * time.Second,
		ReconnectMin: 10 * time.Millisecond,
		ReconnectMax: 50 * time.Millisecond,
	}
}

func startRouter(t testing.TB, h smsc.DeliverHandler, cfgs ...smsc.LinkConfig) *smsc.Router {
	t.Helper()
	r, err := smsc.NewRouter(cfgs, h, nil, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	t.Cleanup(func() { r.Close() })
	return r
}

// simAndRouter starts a simulator and a router with one bound link "a" to it.
func simAndRouter(t testing.TB, cfg smscsim.Config, h smsc.DeliverHandler) (*smscsim.Sim, *smsc.Router) {
	t.Helper()
	sim := startSim(t, cfg)
	r := startRouter(t, h, linkCfg("a", sim.Addr()))
	waitBound(t, r, "a")
	return sim, r
}

func waitBound(t testing.TB, r *smsc.Router, names ...string) {
	t.Helper()
	poll.Until(t, "links bound "+strings.Join(names, ","), func() bool {
		for _, st := range r.States() {
			for _, n := range names {
				if st.Name == n && !st.Bound {
					return false
				}
			}
		}
		return true
	})
}

func state(r *smsc.Router, name string) smsc.LinkState {
	for _, st := range r.States() {
		if st.Name == name {
			return st
		}
	}
	return smsc.LinkState{}
}

func part(dest phonebook.MSISDN, text string) smsc.Part {
	return smsc.Part{Dest: dest, Payload: []byte(text)}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deliveries records what the handler was given.
type deliveries struct {
	mu  sync.Mutex
	got []smsc.Deliver
}

func (d *deliveries) handle(_ context.Context, x smsc.Deliver) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.got = append(d.got, x)
	return nil
}

func (d *deliveries) list() []smsc.Deliver {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]smsc.Deliver(nil), d.got...)
}

func TestBind(t *testing.T) {
	sim := startSim(t, smscsim.Config{SystemID: "phonebook", Password: "secret"})
	good := linkCfg("good", sim.Addr())
	bad := linkCfg("bad", sim.Addr())
	bad.Password = "wrong"
	r := startRouter(t, nil, good, bad)
	waitBound(t, r, "good")
	poll.Until(t, "bad link to report the refusal", func() bool {
		return strings.Contains(state(r, "bad").LastError, "ESME_RINVPASWD")
	})
	if st := state(r, "bad"); st.Bound {
		t.Fatalf("link with a wrong password is bound: %+v", st)
	}
	if st := sim.Stats(); st.Binds != 1 || st.BindFailures < 1 {
		t.Fatalf("sim stats %+v: want 1 bind and failures", st)
	}
}

func TestSubmitReturnsMessageID(t *testing.T) {
	sim, r := simAndRouter(t, smscsim.Config{MessageIDStyle: "hex-lower"}, nil)
	p := part(cnMobile, "Your code is 123456")
	p.RegisteredDelivery = true
	p.Validity = 10 * time.Minute
	res, err := r.Submit(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	subs := sim.Submits()
	if len(subs) != 1 {
		t.Fatalf("sim has %d submits", len(subs))
	}
	s := subs[0]
	if res.Link != "a" || res.MessageID == "" || res.MessageID != s.MessageID {
		t.Fatalf("result %+v, sim message id %q", res, s.MessageID)
	}
	if s.Dest != "8613800138000" || s.DestTON != 1 || s.DestNPI != 1 {
		t.Fatalf("destination %q TON %d NPI %d; want international without '+'", s.Dest, s.DestTON, s.DestNPI)
	}
	if s.Source != "Phonebook" || s.SourceTON != 5 || s.SourceNPI != 0 {
		t.Fatalf("source %q TON %d NPI %d; want alphanumeric 5/0", s.Source, s.SourceTON, s.SourceNPI)
	}
	if s.Text != "Your code is 123456" || s.RegisteredDelivery != 1 || s.ValidityPeriod != "000000001000000R" {
		t.Fatalf("submit %+v", s)
	}
}

func TestSourceAddressTypes(t *testing.T) {
	for _, tc := range []struct {
		src            string
		set            bool // explicit TON/NPI from the configuration
		cfgTON, cfgNPI uint8
		want           string
		ton, npi       uint8
	}{
		{src: "+8613900001111", want: "8613900001111", ton: 1, npi: 1},
		{src: "10690123", want: "10690123", ton: 3, npi: 0},
		{src: "8613900001111", want: "8613900001111", ton: 1, npi: 1},
		{src: "Phonebook", want: "Phonebook", ton: 5, npi: 0},
		{src: "10690", set: true, want: "10690", ton: 0, npi: 0},
		{src: "+10690", cfgNPI: 1, want: "10690", ton: 0, npi: 1},
	} {
		t.Run(tc.src, func(t *testing.T) {
			sim := startSim(t, smscsim.Config{})
			cfg := linkCfg("a", sim.Addr())
			cfg.SourceTON, cfg.SourceNPI, cfg.SourceTONNPISet = tc.cfgTON, tc.cfgNPI, tc.set
			r := startRouter(t, nil, cfg)
			waitBound(t, r, "a")
			p := part(cnMobile, "x")
			p.Source = tc.src
			if _, err := r.Submit(ctxT(t), p); err != nil {
				t.Fatal(err)
			}
			s := sim.Submits()[0]
			if s.Source != tc.want || s.SourceTON != tc.ton || s.SourceNPI != tc.npi {
				t.Fatalf("got %q %d/%d, want %q %d/%d", s.Source, s.SourceTON, s.SourceNPI, tc.want, tc.ton, tc.npi)
			}
		})
	}
}

func TestFullWindowWaits(t *testing.T) {
	sim := startSim(t, smscsim.Config{RespDelay: 20 * time.Millisecond})
	cfg := linkCfg("a", sim.Addr())
	cfg.Window = 2
	r := startRouter(t, nil, cfg)
	waitBound(t, r, "a")
	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() {
			_, err := r.Submit(ctxT(t), part(cnMobile, "hi"))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if st := sim.Stats(); st.Submits != 10 || st.MaxOutstanding > 2 || st.MaxOutstanding < 1 {
		t.Fatalf("sim stats %+v: want 10 submits, never more than 2 outstanding", st)
	}
}

func TestMaxTPS(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	cfg := linkCfg("a", sim.Addr())
	cfg.MaxTPS = 0.5 // one token every two seconds, burst 1
	r := startRouter(t, nil, cfg)
	waitBound(t, r, "a")
	if _, err := r.Submit(ctxT(t), part(cnMobile, "first")); err != nil {
		t.Fatal(err)
	}
	// The limiter knows at once that the next token comes after this
	// deadline, so it refuses without sending.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := r.Submit(ctx, part(cnMobile, "second"))
	var se *smsc.SubmitError
	if !errors.As(err, &se) || !se.Temporary {
		t.Fatalf("second submit within the rate: %v; want a temporary SubmitError", err)
	}
	if n := len(sim.Submits()); n != 1 {
		t.Fatalf("sim got %d submits; the limiter let one through too many", n)
	}
}

func TestReceiptWithCollidingSequenceNumber(t *testing.T) {
	// The simulator sends each receipt before the submit_sm_resp, with the
	// submit's own sequence number.
	var d deliveries
	sim, r := simAndRouter(t, smscsim.Config{CollideSeq: true, ReceiptFormat: "tlv"}, d.handle)
	var ids []string
	for i := range 3 {
		p := part(cnMobile, "code")
		p.RegisteredDelivery = true
		res, err := r.Submit(ctxT(t), p)
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		ids = append(ids, res.MessageID)
	}
	poll.Until(t, "3 receipts", func() bool { return len(d.list()) == 3 })
	// Handlers run concurrently: receipts may be handled in any order.
	for _, got := range d.list() {
		if !got.IsReceipt() || !slices.Contains(ids, got.ReceiptedMessageID) || got.MessageState != 2 || got.Link != "a" {
			t.Fatalf("receipt %+v; want one of %v, DELIVRD", got, ids)
		}
		ids = slices.DeleteFunc(ids, func(id string) bool { return id == got.ReceiptedMessageID })
	}
	poll.Until(t, "receipts acknowledged", func() bool { return sim.Stats().Delivered == 3 })
}

func TestMOWithCollidingSequenceNumber(t *testing.T) {
	var d deliveries
	sim, r := simAndRouter(t, smscsim.Config{CollideSeq: true, RespDelay: 300 * time.Millisecond}, d.handle)
	done := make(chan error, 1)
	go func() {
		_, err := r.Submit(ctxT(t), part(cnMobile, "pending"))
		done <- err
	}()
	if _, err := sim.WaitSubmits(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	// The submit is unanswered for RespDelay: the MO borrows its sequence
	// number.
	if err := sim.InjectMO(ctxT(t), "+8613900001111", "10690", "hello"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("submit lost its response: %v", err)
	}
	got := d.list()
	if len(got) != 1 || got[0].IsReceipt() || string(got[0].Payload) != "hello" || got[0].SourceAddr != "8613900001111" || got[0].SourceTON != 1 {
		t.Fatalf("deliveries %+v", got)
	}
}

func TestMOAsDataSM(t *testing.T) {
	var d deliveries
	sim, _ := simAndRouter(t, smscsim.Config{MOAsDataSM: true}, d.handle)
	if err := sim.InjectMO(ctxT(t), "+8613900001111", "10690", "via data sm"); err != nil {
		t.Fatal(err)
	}
	got := d.list()
	if len(got) != 1 || string(got[0].Payload) != "via data sm" || got[0].SourceAddr != "8613900001111" || got[0].IsReceipt() {
		t.Fatalf("deliveries %+v", got)
	}
	if st := sim.Stats(); st.Delivered != 1 || st.GenericNacks != 0 {
		t.Fatalf("sim stats %+v", st)
	}
}

func TestHandlerErrorRedelivers(t *testing.T) {
	sim := startSim(t, smscsim.Config{RedeliverAfter: 10 * time.Millisecond})
	var calls atomic.Int32
	h := func(_ context.Context, d smsc.Deliver) error {
		if calls.Add(1) == 1 {
			return errors.New("database down")
		}
		return nil
	}
	r := startRouter(t, h, linkCfg("a", sim.Addr()))
	waitBound(t, r, "a")
	if err := sim.InjectMO(ctxT(t), "+8613900001111", "10690", "hello"); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("handler called %d times; want a refusal then a redelivery", n)
	}
	if st := sim.Stats(); st.DeliverRefused != 1 || st.Delivered != 1 {
		t.Fatalf("sim stats %+v", st)
	}
}

func TestLongMOArrivesInParts(t *testing.T) {
	var d deliveries
	sim, _ := simAndRouter(t, smscsim.Config{}, d.handle)
	text := strings.Repeat("你好😀", 40) // UCS-2: 320 octets, 3 parts
	if err := sim.InjectMO(ctxT(t), "+8613900001111", "10690", text); err != nil {
		t.Fatal(err)
	}
	got := d.list()
	if len(got) != 3 {
		t.Fatalf("%d parts", len(got))
	}
	// Parts may arrive in any order, as from a real SMSC.
	slices.SortFunc(got, func(a, b smsc.Deliver) int { return int(a.Payload[5]) - int(b.Payload[5]) })
	var units []byte
	for i, p := range got {
		if p.ESMClass&0x40 == 0 || p.DataCoding != 8 || p.Payload[0] != 5 || int(p.Payload[5]) != i+1 || p.Payload[4] != 3 {
			t.Fatalf("part %d: %+v", i, p)
		}
		body := p.Payload[6:]
		if hi := binary.BigEndian.Uint16(body[len(body)-2:]); hi >= 0xD800 && hi <= 0xDBFF && i < 2 {
			t.Fatalf("part %d ends inside a surrogate pair", i)
		}
		units = append(units, body...)
	}
	if len(units) != 2*len([]rune(text))+2*40 { // each emoji is two UTF-16 units
		t.Fatalf("reassembled %d bytes", len(units))
	}
}

func TestLinkDropFailsInFlightAndReconnects(t *testing.T) {
	sim, r := simAndRouter(t, smscsim.Config{RespDelay: time.Minute}, nil)
	errs := make(chan error, 5)
	for range 5 {
		go func() {
			_, err := r.Submit(ctxT(t), part(cnMobile, "burst"))
			errs <- err
		}()
	}
	if _, err := sim.WaitSubmits(ctxT(t), 5); err != nil {
		t.Fatal(err)
	}
	sim.DropLinks()
	for range 5 {
		err := <-errs
		var se *smsc.SubmitError
		if !errors.As(err, &se) || !se.Temporary || !se.Sent || !errors.Is(err, smsc.ErrLinkClosed) || !strings.Contains(err.Error(), "sent, no response") {
			t.Fatalf("in-flight submit: %v; want a temporary ErrLinkClosed, sent", err)
		}
	}
	poll.Until(t, "a second bind", func() bool { return sim.Stats().Binds == 2 })
	waitBound(t, r, "a")
	sim.SetRespDelay(0)
	if _, err := r.Submit(ctxT(t), part(cnMobile, "after reconnect")); err != nil {
		t.Fatal(err)
	}
}

func TestResponseTimeoutIsTemporary(t *testing.T) {
	sim := startSim(t, smscsim.Config{RespDelay: time.Minute})
	cfg := linkCfg("a", sim.Addr())
	// Long enough for the bind on a loaded machine; the submit's answer
	// never comes.
	cfg.RespTimeout = time.Second
	r := startRouter(t, nil, cfg)
	waitBound(t, r, "a")
	_, err := r.Submit(ctxT(t), part(cnMobile, "x"))
	var se *smsc.SubmitError
	if !errors.As(err, &se) || !se.Temporary || !se.Sent || !errors.Is(err, smsc.ErrRespTimeout) || se.Link != "a" {
		t.Fatalf("got %v; want a temporary ErrRespTimeout", err)
	}
	if st := state(r, "a"); !st.Bound || st.InFlight != 0 {
		t.Fatalf("after a timeout: %+v; want still bound, window released", st)
	}
}

func TestReconnectThenSubmit(t *testing.T) {
	sim, r := simAndRouter(t, smscsim.Config{}, nil)
	sim.DropLinks()
	poll.Until(t, "a second bind", func() bool { return sim.Stats().Binds == 2 })
	waitBound(t, r, "a")
	if _, err := r.Submit(ctxT(t), part(cnMobile, "after reconnect")); err != nil {
		t.Fatal(err)
	}
}

func TestRouterPrefixesAndFailover(t *testing.T) {
	simCN := startSim(t, smscsim.Config{})
	simMobile := startSim(t, smscsim.Config{})
	simWorld := startSim(t, smscsim.Config{})
	cn := linkCfg("cn", simCN.Addr())
	cn.Prefixes = []string{"+86"}
	mobile := linkCfg("cn-mobile", simMobile.Addr())
	mobile.Prefixes = []string{"+8613", "+8615"}
	world := linkCfg("world", simWorld.Addr())
	r := startRouter(t, nil, world, cn, mobile)
	waitBound(t, r, "cn", "cn-mobile", "world")
	route := func(dest phonebook.MSISDN) string {
		t.Helper()
		res, err := r.Submit(ctxT(t), part(dest, "x"))
		if err != nil {
			t.Fatalf("%s: %v", dest, err)
		}
		return res.Link
	}
	for dest, want := range map[phonebook.MSISDN]string{cnMobile: "cn-mobile", cnFixed: "cn", usMobile: "world"} {
		if got := route(dest); got != want {
			t.Fatalf("%s went via %s, want %s", dest, got, want)
		}
	}
	simMobile.Close()
	poll.Until(t, "cn-mobile down", func() bool { return !state(r, "cn-mobile").Bound })
	if got := route(cnMobile); got != "cn" {
		t.Fatalf("with cn-mobile down, %s went via %s, want cn", cnMobile, got)
	}
	simCN.Close()
	poll.Until(t, "cn down", func() bool { return !state(r, "cn").Bound })
	if got := route(cnMobile); got != "world" {
		t.Fatalf("with cn down, %s went via %s, want world", cnMobile, got)
	}
	simWorld.Close()
	poll.Until(t, "world down", func() bool { return !state(r, "world").Bound })
	_, err := r.Submit(ctxT(t), part(cnMobile, "x"))
	var se *smsc.SubmitError
	if !errors.As(err, &se) || !se.Temporary || !errors.Is(err, smsc.ErrNoLinkBound) {
		t.Fatalf("no link up: %v; want temporary ErrNoLinkBound", err)
	}
}

func TestNoRouteIsPermanent(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	cfg := linkCfg("cn", sim.Addr())
	cfg.Prefixes = []string{"+86"}
	r := startRouter(t, nil, cfg)
	_, err := r.Submit(ctxT(t), part(usMobile, "x"))
	var se *smsc.SubmitError
	if !errors.As(err, &se) || se.Temporary || !errors.Is(err, smsc.ErrNoRoute) {
		t.Fatalf("got %v; want permanent ErrNoRoute", err)
	}
}

func TestThrottledSubmitsAreTemporary(t *testing.T) {
	_, r := simAndRouter(t, smscsim.Config{ThrottleEvery: 3}, nil)
	for i := 1; i <= 6; i++ {
		_, err := r.Submit(ctxT(t), part(cnMobile, "x"))
		if i%3 != 0 {
			if err != nil {
				t.Fatalf("submit %d: %v", i, err)
			}
			continue
		}
		var se *smsc.SubmitError
		if !errors.As(err, &se) || se.Status != 0x58 || !se.Temporary || se.Link != "a" {
			t.Fatalf("submit %d: %v; want temporary ESME_RTHROTTLED", i, err)
		}
		if !strings.Contains(err.Error(), "ESME_RTHROTTLED") {
			t.Fatalf("error text %q does not name the status", err)
		}
	}
}

func TestRejectedDestinationIsPermanent(t *testing.T) {
	_, r := simAndRouter(t, smscsim.Config{RejectPrefixes: []string{"+1"}}, nil)
	_, err := r.Submit(ctxT(t), part(usMobile, "x"))
	var se *smsc.SubmitError
	if !errors.As(err, &se) || se.Status != 0x0B || se.Temporary {
		t.Fatalf("got %v; want permanent ESME_RINVDSTADR", err)
	}
}

func TestMalformedPDUsFromSMSC(t *testing.T) {
	var d deliveries
	sim, r := simAndRouter(t, smscsim.Config{}, d.handle)
	pdu := func(id uint32, seq uint32, body ...byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(16+len(body)))
		b = binary.BigEndian.AppendUint32(b, id)
		b = binary.BigEndian.AppendUint32(b, 0)
		b = binary.BigEndian.AppendUint32(b, seq)
		return append(b, body...)
	}
	// Each of these must be answered without dropping the link.
	for name, raw := range map[string][]byte{
		"unknown command":         pdu(0x00000999, 7),
		"deliver_sm no body":      pdu(0x00000005, 8),
		"deliver_sm truncated":    pdu(0x00000005, 9, 0, 1, 1, '8', '6'),
		"deliver_sm long sm":      pdu(0x00000005, 10, append([]byte{0, 1, 1, '1', 0, 1, 1, '2', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 200}, "short"...)...),
		"deliver_sm bad tlv":      pdu(0x00000005, 11, append([]byte{0, 1, 1, '1', 0, 1, 1, '2', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'x'}, 0x04, 0x24, 0x00, 0x09, 1)...),
		"deliver_sm udhi garbage": pdu(0x00000005, 12, append([]byte{0, 1, 1, '1', 0, 1, 1, '2', 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 2}, 9, 9)...),
		"stray response":          pdu(0x80000004, 99, 'x', 0),
	} {
		if err := sim.InjectRaw(raw); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	poll.Until(t, "generic_nack for the unknown command", func() bool { return sim.Stats().GenericNacks == 1 })
	// The UDHI one is well-formed SMPP (the UDH is the handler's business).
	if _, err := r.Submit(ctxT(t), part(cnMobile, "still here")); err != nil {
		t.Fatal(err)
	}
	if st := sim.Stats(); st.Binds != 1 {
		t.Fatalf("link rebound after answerable malformed PDUs: %+v", st)
	}
	for _, got := range d.list() {
		if got.ESMClass != 0x40 {
			t.Fatalf("malformed deliver_sm reached the handler: %+v", got)
		}
	}
	// A PDU shorter than its header cannot be resynchronised: the link
	// closes and binds again.
	sim.InjectRaw([]byte{0, 0, 0, 5, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 1})
	poll.Until(t, "rebind after a framing error", func() bool { return sim.Stats().Binds == 2 })
	waitBound(t, r, "a")
	if _, err := r.Submit(ctxT(t), part(cnMobile, "after framing error")); err != nil {
		t.Fatal(err)
	}
}

func TestEnquireLinkKeepsLink(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	cfg := linkCfg("a", sim.Addr())
	cfg.EnquireLink = 100 * time.Millisecond
	r := startRouter(t, nil, cfg)
	waitBound(t, r, "a")
	poll.Until(t, "enquire_links", func() bool { return sim.Stats().EnquireLinks >= 5 })
	if st := sim.Stats(); st.Binds != 1 || !state(r, "a").Bound {
		t.Fatalf("link did not stay up: %+v", st)
	}
}

func TestUnansweredEnquireLinkReconnects(t *testing.T) {
	sim := startSim(t, smscsim.Config{IgnoreEnquireLink: true})
	cfg := linkCfg("a", sim.Addr())
	// The bind is answered; the enquire_link never is. The response
	// timeout must outlast a bind's answer on a loaded machine.
	cfg.EnquireLink = 100 * time.Millisecond
	cfg.RespTimeout = time.Second
	r := startRouter(t, nil, cfg)
	waitBound(t, r, "a")
	poll.Until(t, "a rebind after a dead link", func() bool { return sim.Stats().Binds >= 2 })
	poll.Until(t, "the reason", func() bool { return strings.Contains(state(r, "a").LastError, "enquire_link") })
}

func TestTransmitterReceiverBind(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	var d deliveries
	cfg := linkCfg("a", sim.Addr())
	cfg.Bind = smsc.BindTransmitterReceive
	r := startRouter(t, d.handle, cfg)
	waitBound(t, r, "a")
	if n := sim.Bound(); n != 2 {
		t.Fatalf("%d sessions bound; want a transmitter and a receiver", n)
	}
	p := part(cnMobile, "x")
	p.RegisteredDelivery = true
	res, err := r.Submit(ctxT(t), p)
	if err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the receipt on the receiver", func() bool { return len(d.list()) == 1 })
	if got := d.list()[0]; got.ReceiptedMessageID != res.MessageID {
		t.Fatalf("receipt %+v for %s", got, res.MessageID)
	}
}

func TestCloseUnbinds(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	r, err := smsc.NewRouter([]smsc.LinkConfig{linkCfg("a", sim.Addr())}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	waitBound(t, r, "a")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the session to end", func() bool { return sim.Bound() == 0 })
	_, err = r.Submit(ctxT(t), part(cnMobile, "x"))
	var se *smsc.SubmitError
	if !errors.As(err, &se) || !se.Temporary {
		t.Fatalf("submit after close: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, c := range map[string]smsc.LinkConfig{
		"no name":    {Addr: "127.0.0.1:1"},
		"no addr":    {Name: "a"},
		"bad addr":   {Name: "a", Addr: "nowhere"},
		"bad bind":   {Name: "a", Addr: "127.0.0.1:1", Bind: "receiver"},
		"bad prefix": {Name: "a", Addr: "127.0.0.1:1", Prefixes: []string{"86"}},
	} {
		if _, err := smsc.NewRouter([]smsc.LinkConfig{c}, nil, nil, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	dup := smsc.LinkConfig{Name: "a", Addr: "127.0.0.1:1"}
	if _, err := smsc.NewRouter([]smsc.LinkConfig{dup, dup}, nil, nil, nil); err == nil {
		t.Error("duplicate names: no error")
	}
}
