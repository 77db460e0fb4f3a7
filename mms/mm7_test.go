package mms

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/mm7"
	"github.com/phonebook/phonebook/mm7/mmscsim"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// simRig is an outbox with one MM7 link to the MMSC simulator over HTTP,
// and the VASP endpoint the simulator sends delivery reports to.
type simRig struct {
	*rig
	sim *mmscsim.Sim
}

func newSimRig(t *testing.T, db *store.DB, cfg Config, sc mmscsim.Config) *simRig {
	t.Helper()
	return newSimRigLink(t, db, cfg, sc, LinkConfig{})
}

// newSimRigLink is newSimRig with lc's NotCapableCodes and VASPMaxBytes on
// the link.
func newSimRigLink(t *testing.T, db *store.DB, cfg Config, sc mmscsim.Config, lc LinkConfig) *simRig {
	t.Helper()
	var vasp atomic.Pointer[http.Handler]
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := vasp.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "not yet", http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	sc.VASPURL, sc.VASPUsername, sc.VASPPassword = srv.URL+"/mm7/a", "mmsc", "s3cret"
	sc.Username, sc.Password = "pb", "vasp-secret"
	sc.RedeliverAfter = 50 * time.Millisecond
	sim := mmscsim.New(sc)
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	link, err := NewMM7Link(LinkConfig{Name: "a", URL: sim.URL(), Username: "pb", Password: "vasp-secret", VASPID: "phonebook",
		VASID: "im", ServiceCode: "MMS1", SenderAddress: "10690", Timeout: 5 * time.Second, NotCapableCodes: lc.NotCapableCodes})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{db: db, sms: &memSMS{}, ev: &events{}, cfg: cfg}
	if r.cfg.NodeID == "" {
		r.cfg.NodeID = "n1"
	}
	if r.cfg.RetryBase == 0 {
		r.cfg.RetryBase = 50 * time.Millisecond
	}
	if r.cfg.Poll == 0 {
		r.cfg.Poll = 20 * time.Millisecond
	}
	media := memMedia{parts: map[string]Part{
		"photo": {ContentType: "image/jpeg", Name: "p.jpg", Data: photo(t, 64, 48, 80)},
		"big":   {ContentType: "image/jpeg", Name: "big.jpg", Data: photo(t, 800, 600, 100)},
	}}
	ob, err := NewOutbox(r.cfg, Deps{Store: db, Links: []Link{link}, Media: media, SMS: r.sms})
	if err != nil {
		t.Fatal(err)
	}
	ob.OnStateChange(r.ev.add)
	h := ob.VASPHandler(LinkConfig{Name: "a", VASPUsername: "mmsc", VASPPassword: "s3cret", VASPMaxBytes: lc.VASPMaxBytes}, nil, nil)
	vasp.Store(&h)
	if err := ob.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ob.Close(context.Background()) })
	r.ob = ob
	return &simRig{rig: r, sim: sim}
}

// Offline and capable: an MMS with the media, the caption and a SMIL that
// shows both goes to the MMSC; its delivery report becomes the sender's
// "delivered".
func TestMM7SubmitPartsSMILAndReport(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		r := newSimRig(t, db, Config{}, mmscsim.Config{ReportDelay: 100 * time.Millisecond})
		r.send(t, "m1", "+8613800138000", "photo")
		r.waitStates(t, "m1", store.MMSSubmitted, store.MMSDelivered)
		subs := r.sim.Submissions()
		if len(subs) != 1 {
			t.Fatalf("%d submissions", len(subs))
		}
		s := subs[0]
		if len(s.To) != 1 || s.To[0] != "+8613800138000" || s.Sender != "10690" || s.VASPID != "phonebook" || s.ServiceCode != "MMS1" || !s.DeliveryReport {
			t.Fatalf("submission %+v", s)
		}
		if len(s.Parts) != 2 || !strings.HasPrefix(s.Parts[0].ContentType, "image/jpeg") || s.Parts[0].ContentLocation != "part1.jpg" ||
			!strings.HasPrefix(s.Parts[1].ContentType, "text/plain") || string(s.Parts[1].Data) != "[+8613900139000] look" {
			t.Fatalf("parts %+v", s.Parts)
		}
		if !strings.Contains(s.SMIL, `<img src="part1.jpg" region="Image"`) || !strings.Contains(s.SMIL, `src="caption.txt" region="Text"`) {
			t.Fatalf("SMIL does not show the photo and the caption:\n%s", s.SMIL)
		}
		ms, _ := db.MMSByRef(context.Background(), "fallback", "m1")
		if ms[0].Link != "a" || ms[0].MessageID != s.MessageID {
			t.Fatalf("recorded %+v, MMSC id %s", ms[0], s.MessageID)
		}
	})
}

// A report sent before the SubmitRsp arrives still delivers the message;
// an oversized photo is adapted before it goes.
func TestMM7ReportBeforeResponseAndAdaptation(t *testing.T) {
	r := newSimRig(t, storetest.SQLite(t), Config{}, mmscsim.Config{ReportBeforeResp: true})
	r.send(t, "m2", "+8613800138001", "big")
	r.waitStates(t, "m2", store.MMSSubmitted, store.MMSDelivered)
	s := r.sim.Submissions()[0]
	if n := len(s.Parts[0].Data); n > 300<<10 || n < 1000 {
		t.Fatalf("adapted photo is %d bytes", n)
	}
}

// The MMSC says the recipient cannot take MMS: the number is marked and
// the message goes as an SMS with a link.
func TestMM7NotCapable(t *testing.T) {
	r := newSimRig(t, storetest.SQLite(t), Config{}, mmscsim.Config{NotCapablePrefixes: []string{"+8613700"}})
	r.send(t, "nc", "+8613700000001", "photo")
	r.waitStates(t, "nc", store.MMSToSMS, store.MMSSMS)
	if v, _ := r.ob.Capabilities().Capable(context.Background(), "+8613700000001"); v.Capable || v.Source != store.CapabilityMMSC {
		t.Fatalf("verdict %+v", v)
	}
	if sms := r.sms.all(); len(sms) != 1 || !strings.HasSuffix(sms[0].text, "https://pb.example/m/nc") {
		t.Fatalf("SMS %+v", sms)
	}
}

// An MMSC whose not-capable answer says nothing of capability: only the
// link's not_capable_codes let the number be marked. Without them the
// refusal is an ordinary permanent one: the message still goes as an SMS
// with a link, but the number is not marked.
func TestMM7NotCapableCodes(t *testing.T) {
	sc := mmscsim.Config{NotCapablePrefixes: []string{"+8613700"}, NotCapableCode: 4004, NotCapableText: "refused for {to}"}
	for _, tc := range []struct {
		name   string
		codes  []int
		marked bool
	}{{"listed", []int{2002, 4004}, true}, {"not listed", []int{2002}, false}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSimRigLink(t, storetest.SQLite(t), Config{}, sc, LinkConfig{NotCapableCodes: tc.codes})
			r.send(t, "nc", "+8613700000001", "photo")
			r.waitStates(t, "nc", store.MMSToSMS, store.MMSSMS)
			v, err := r.ob.Capabilities().Capable(context.Background(), "+8613700000001")
			if err != nil {
				t.Fatal(err)
			}
			if marked := !v.Capable && v.Source == store.CapabilityMMSC; marked != tc.marked {
				t.Fatalf("verdict %+v; marked by the MMSC's answer: %v, want %v", v, marked, tc.marked)
			}
		})
	}
}

// The VASP endpoint refuses a request over the link's vasp_max_bytes with
// a fault, and takes one under it.
func TestVASPMaxBytes(t *testing.T) {
	r := newSimRigLink(t, storetest.SQLite(t), Config{}, mmscsim.Config{}, LinkConfig{VASPMaxBytes: 64 << 10})
	big := photo(t, 800, 600, 100) // some 100 KiB
	if len(big) <= 64<<10 {
		t.Fatalf("test photo is only %d bytes", len(big))
	}
	err := r.sim.InjectMO(context.Background(), mmscsim.MO{From: "+8613800138000", To: "10690",
		Media: []mm7.Part{{ContentType: "image/jpeg", ContentLocation: "big.jpg", Data: big}}})
	var se *mm7.StatusError
	if !errors.As(err, &se) || se.HTTPStatus != http.StatusRequestEntityTooLarge || se.Status.Code != mm7.StatusContentRefused {
		t.Fatalf("a %d-byte MO MMS over a 64 KiB limit: %v, want HTTP 413 and status 2004", len(big), err)
	}
}

// Wrong credentials on the VASP endpoint are refused; reports for ids we
// never submitted are answered and change nothing.
func TestVASPEndpointRefusesStrangers(t *testing.T) {
	r := newSimRig(t, storetest.SQLite(t), Config{}, mmscsim.Config{})
	h := r.ob.VASPHandler(LinkConfig{Name: "a", VASPUsername: "mmsc", VASPPassword: "s3cret"}, nil, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Post(srv.URL, "text/xml", strings.NewReader("<not-soap/>"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no credentials: HTTP %d", resp.StatusCode)
	}
	st, err := r.sim.SendReport(context.Background(), "no-such-id", "+8613800138000", "Retrieved")
	if err != nil || !st.Success() {
		t.Fatalf("report for an unknown id: %v %v", st, err)
	}
}

// The MMSC is down for 30 seconds with messages queued, then comes back:
// each message reaches it exactly once.
func TestMMSCDownThirtySeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 30 s outage")
	}
	r := newSimRig(t, storetest.SQLite(t), Config{RetryBase: 500 * time.Millisecond, RetryMax: 2 * time.Second}, mmscsim.Config{})
	if err := r.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		r.send(t, fmt.Sprint("d", i), phonebook.MSISDN(fmt.Sprintf("+86138%08d", i)), "photo")
	}
	outage := time.Now()
	poll.Until(t, "the 30 s outage to pass", func() bool { return time.Since(outage) >= 30*time.Second })
	if len(r.sim.Submissions()) != 0 {
		t.Fatal("the simulator took messages while down")
	}
	if err := r.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		r.waitStates(t, fmt.Sprint("d", i), store.MMSSubmitted, store.MMSDelivered)
	}
	seen := map[string]int{}
	for _, s := range r.sim.Submissions() {
		seen[s.To[0]]++
	}
	for to, c := range seen {
		if c != 1 {
			t.Fatalf("%s got %d MMS", to, c)
		}
	}
	if len(seen) != n || r.sim.Stats().Duplicates != 0 {
		t.Fatalf("%d recipients, %d duplicates", len(seen), r.sim.Stats().Duplicates)
	}
	ms, _ := r.db.MMSByRef(context.Background(), "fallback", "d0")
	if ms[0].Attempts != 1 {
		t.Fatalf("d0 took %d attempts: refused connections must cost none", ms[0].Attempts)
	}
}

// An MMSC that resets the connection after accepting every third submit
// (the SubmitRsp lost): the outbox tries those messages again, and every
// copy of one message carries the same TransactionID, so an MMSC that keeps
// transaction ids can drop the repeat; no two messages share one.
func TestMM7RetryKeepsTheTransactionID(t *testing.T) {
	r := newSimRig(t, storetest.SQLite(t), Config{RetryBase: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond},
		mmscsim.Config{ResetEvery: 3})
	const n = 12
	for i := 0; i < n; i++ {
		r.send(t, fmt.Sprint("t", i), phonebook.MSISDN(fmt.Sprintf("+86139%08d", i)), "photo")
	}
	for i := 0; i < n; i++ {
		r.waitStates(t, fmt.Sprint("t", i), store.MMSSubmitted, store.MMSDelivered)
	}
	txOf, owner := map[string]string{}, map[string]string{}
	copies := 0
	for _, s := range r.sim.Submissions() {
		to := s.To[0]
		copies++
		if tx, ok := txOf[to]; ok && tx != s.TransactionID {
			t.Fatalf("%s: copies with transaction ids %q and %q", to, tx, s.TransactionID)
		}
		txOf[to] = s.TransactionID
		if o, ok := owner[s.TransactionID]; ok && o != to {
			t.Fatalf("transaction id %q used for %s and %s", s.TransactionID, o, to)
		}
		owner[s.TransactionID] = to
	}
	if len(txOf) != n || copies == n {
		t.Fatalf("%d recipients in %d submissions: want %d, some of them twice (every third response is lost)", len(txOf), copies, n)
	}
	if d := r.sim.Stats().Duplicates; d != int64(copies-n) {
		t.Fatalf("the simulator counted %d repeats, want %d", d, copies-n)
	}
}
