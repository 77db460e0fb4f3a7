package smsc_test

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// TestLinkBindsShareWindows: a link with binds: 3 keeps three sessions,
// each with its own window, and uses them side by side; no session ever
// has more than its window outstanding.
func TestLinkBindsShareWindows(t *testing.T) {
	sim := startSim(t, smscsim.Config{RespDelay: time.Second})
	cfg := linkCfg("a", sim.Addr())
	cfg.Window, cfg.Binds, cfg.RespTimeout = 2, 3, 5*time.Second
	r := startRouter(t, nil, cfg)
	poll.Until(t, "three sessions bound", func() bool { return state(r, "a").Sessions == 3 })
	if n := sim.Bound(); n != 3 {
		t.Fatalf("simulator sees %d bound sessions, want 3", n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 9)
	for range 9 {
		wg.Go(func() {
			_, err := r.Submit(ctxT(t), part(cnMobile, "hi"))
			errs <- err
		})
	}
	// Six go out at once (2 per bind); the other three wait for room.
	poll.Until(t, "six submits outstanding", func() bool { return state(r, "a").InFlight == 6 })
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	st := sim.Stats()
	if st.Submits != 9 || st.MaxOutstanding != 2 {
		t.Fatalf("sim stats %+v: want 9 submits, at most 2 outstanding per session", st)
	}
	if s := state(r, "a"); s.InFlight != 0 || s.Binds != 3 || !s.Bound {
		t.Fatalf("state after the submits: %+v", s)
	}
}

func TestLinkBindsTransmitterReceiver(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	cfg := linkCfg("a", sim.Addr())
	cfg.Bind, cfg.Binds = smsc.BindTransmitterReceive, 2
	r := startRouter(t, nil, cfg)
	waitBound(t, r, "a")
	if n := sim.Bound(); n != 4 {
		t.Fatalf("simulator sees %d bound sessions, want 2 transmitters and 2 receivers", n)
	}
	if s := state(r, "a"); s.Sessions != 2 {
		t.Fatalf("state %+v: want 2 transmitting sessions", s)
	}
	if _, err := r.Submit(ctxT(t), part(cnMobile, "hi")); err != nil {
		t.Fatal(err)
	}
}

func TestLinkBindsLimit(t *testing.T) {
	cfg := linkCfg("a", "127.0.0.1:1")
	cfg.Binds = smsc.MaxBinds + 1
	if _, err := smsc.NewRouter([]smsc.LinkConfig{cfg}, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "binds") {
		t.Fatalf("binds %d: %v; want an error naming binds", cfg.Binds, err)
	}
}
