package smsc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"math/big"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// selfSigned makes a throw-away server certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		DNSNames:     []string{"smsc.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestTLS(t *testing.T) {
	cert := selfSigned(t)
	sim := startSim(t, smscsim.Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	verified := linkCfg("verified", sim.Addr())
	verified.TLS = true
	verified.TLSServerName = "smsc.test"
	insecure := linkCfg("insecure", sim.Addr())
	insecure.TLS, insecure.TLSInsecureSkipVerify = true, true
	r := startRouter(t, nil, verified, insecure)
	waitBound(t, r, "insecure")
	if _, err := r.Submit(ctxT(t), part(cnMobile, "over TLS")); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the verifying link to refuse the self-signed certificate", func() bool {
		return strings.Contains(state(r, "verified").LastError, "certificate")
	})
	if state(r, "verified").Bound {
		t.Fatal("bound to an SMSC whose certificate does not verify")
	}
}

func TestTextReceiptAndMetrics(t *testing.T) {
	sim := startSim(t, smscsim.Config{ReceiptFormat: "text", ReceiptStat: "UNDELIV", ReceiptErr: 11, MessageIDStyle: "hex-upper", ReceiptIDStyle: "decimal"})
	var d deliveries
	reg := prometheus.NewRegistry()
	r, err := smsc.NewRouter([]smsc.LinkConfig{linkCfg("a", sim.Addr())}, d.handle, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	r.Start(context.Background())
	t.Cleanup(func() { r.Close() })
	waitBound(t, r, "a")
	p := part(cnMobile, "Your code is 123456")
	p.RegisteredDelivery = true
	if _, err := r.Submit(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the receipt", func() bool { return len(d.list()) == 1 })
	got := d.list()[0]
	text := string(got.Payload)
	if !got.IsReceipt() || got.ESMClass != 0x04 || got.ReceiptedMessageID != "" ||
		!strings.Contains(text, "stat:UNDELIV err:011") || !strings.Contains(text, "dlvrd:000") || got.SourceAddr != "8613800138000" {
		t.Fatalf("receipt %+v %q", got, text)
	}
	poll.Until(t, "metrics", func() bool {
		return testutil.ToFloat64(r.Metrics().Delivers.WithLabelValues("a", "receipt", "ok")) == 1
	})
	for name, want := range map[string]float64{
		"submits ok": testutil.ToFloat64(r.Metrics().Submits.WithLabelValues("a", "ESME_ROK")),
		"link up":    testutil.ToFloat64(r.Metrics().Up.WithLabelValues("a")),
		"binds ok":   testutil.ToFloat64(r.Metrics().Binds.WithLabelValues("a", "ESME_ROK")),
	} {
		if want != 1 {
			t.Errorf("%s = %v, want 1", name, want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "phonebook_smsc_submits_total"); err != nil || n != 1 {
		t.Errorf("registry: %d series, %v", n, err)
	}
}

func TestHandlerPanicIsRefusedNotFatal(t *testing.T) {
	var calls atomic.Int32
	h := func(context.Context, smsc.Deliver) error {
		if calls.Add(1) == 1 {
			panic("bug")
		}
		return nil
	}
	sim, _ := simAndRouter(t, smscsim.Config{RedeliverAfter: 10 * time.Millisecond}, h)
	if err := sim.InjectMO(ctxT(t), "+8613900001111", "10690", "hi"); err != nil {
		t.Fatal(err)
	}
	if st := sim.Stats(); calls.Load() != 2 || st.DeliverRefused != 1 || st.Binds != 1 {
		t.Fatalf("calls %d, stats %+v", calls.Load(), st)
	}
}

func TestSlowHandlerDoesNotDelaySubmits(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{}, 1)
	h := func(ctx context.Context, _ smsc.Deliver) error {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}
	sim, r := simAndRouter(t, smscsim.Config{}, h)
	defer close(release)
	go sim.InjectMO(context.Background(), "+8613900001111", "10690", "held")
	<-entered // the handler holds the MO; submits must still get their responses
	for range 20 {
		if _, err := r.Submit(ctxT(t), part(cnMobile, "x")); err != nil {
			t.Fatal(err)
		}
	}
}

// A TLS link to a plain-TCP SMSC says the handshake failed, not "context
// deadline exceeded".
func TestTLSToPlainSMSC(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	cfg := linkCfg("tls", sim.Addr())
	cfg.TLS, cfg.RespTimeout = true, 300*time.Millisecond
	r := startRouter(t, nil, cfg)
	poll.Until(t, "a bind error", func() bool { return state(r, "tls").LastError != "" })
	if e := state(r, "tls").LastError; !strings.Contains(e, "TLS handshake with "+sim.Addr()+" failed") {
		t.Fatalf("last error %q; want it to say the TLS handshake failed", e)
	}
}

// The simulator's reset mode drops the session with a TCP reset after N
// accepted submits, leaving the last one unanswered: the link reports it
// sent and unanswered, rebinds, and submits go on.
func TestSessionResetAfterSubmits(t *testing.T) {
	sim, r := simAndRouter(t, smscsim.Config{ResetAfter: 3}, nil)
	var sent, ok int
	for i := 0; i < 7; {
		_, err := r.Submit(ctxT(t), part(cnMobile, "reset "+string(rune('a'+i))))
		var se *smsc.SubmitError
		switch {
		case err == nil:
			ok++
		case errors.As(err, &se) && se.Sent && se.Temporary:
			sent++
		case errors.As(err, &se) && !se.Sent && se.Temporary:
			// The reset is not seen yet: never written, so try again.
			if !strings.Contains(err.Error(), "not sent") {
				t.Fatalf("unsent submit: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
			continue
		default:
			t.Fatalf("submit %d: %v", i, err)
		}
		i++
	}
	st := sim.Stats()
	if sent != 2 || ok != 5 || st.Resets != 2 || st.LostResps != 2 || st.Submits != 7 {
		t.Fatalf("%d unanswered, %d answered; simulator %+v", sent, ok, st)
	}
}
