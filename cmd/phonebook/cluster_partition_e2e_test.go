package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/phonebook/phonebook/cluster/clustertest"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store/storetest"
)

func readyz(t *testing.T, m *Main) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + m.HTTPAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitTrue polls cond for one step (stepPatience within ctx).
func waitTrue(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	ctx = step(t, ctx)
	for !cond() {
		if ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Node C's link to NATS is cut (through a proxy) for longer than
// purge_after, then healed. During the cut C's /readyz fails after
// ready_grace while A's stays ready; A purges C's sessions and Ivy (on A)
// sees Gina (on C) go offline; Gina's message to Ivy is STORED. After the
// heal, within dead_after + 5 s: Ivy gets the message without logging in
// again, sees Gina online again, the store says so, Gina gets a fresh
// presence list, and C is ready again.
func TestPartitionEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("cuts a link for several seconds")
	}
	dsn := storetest.MySQLDSN(t)
	ns := clustertest.StartNATS(t)
	u, _ := url.Parse(ns.URL())
	proxy := clustertest.NewProxy(t, u.Host)
	suffix := storetest.Name("")
	var cfg config.Config
	node := func(name, nats string) *Main {
		cfg = testConfig(t)
		cfg.Node = name + "-" + suffix
		cfg.Database.Driver, cfg.Database.DSN = "mysql", dsn
		cfg.Cluster.NATSURL = nats
		cfg.Cluster.DeadAfter, cfg.Cluster.PurgeAfter = 2*time.Second, 2*time.Second
		cfg.Cluster.ReadyGrace = time.Second
		return startMain(t, cfg)
	}
	a, x := node("a", ns.URL()), node("c", proxy.URL())
	ctx := t.Context()

	const ivyNum, ginaNum = "+8613800138000", "+8613900139000"
	ivy := phone(t, a, "13800138000")
	<-ivy.PresenceLists()
	gina := phone(t, x, "13900139000")
	<-gina.PresenceLists()
	mutualContacts(t, ctx, ivy, "13800138000", gina, "13900139000")
	waitTrue(t, ctx, "A to see gina on C", func() bool { return a.relayRouter.Locate(ginaNum) != nil })
	// (Ready as a whole once the built-in SMSC simulator's link is bound.)
	waitTrue(t, ctx, "C ready before the cut", func() bool { code, _ := readyz(t, x); return code == 200 })

	proxy.Cut()
	cutAt := time.Now()
	waitTrue(t, ctx, "C's /readyz to fail", func() bool {
		code, body := readyz(t, x)
		return code == 503 && strings.Contains(body, "cut off from NATS")
	})
	if d := time.Since(cutAt); d < cfg.Cluster.ReadyGrace {
		t.Fatalf("C unready %s after the cut, before ready_grace %s", d, cfg.Cluster.ReadyGrace)
	}
	if _, body := readyz(t, a); !strings.Contains(body, `"cluster":"ok"`) {
		t.Fatalf("A, still connected, unready: %s", body)
	}
	// A purges C's sessions (after dead_after + purge_after) and marks
	// gina offline: ivy is told.
	purged := step(t, ctx)
	for done := false; !done; {
		select {
		case pc := <-ivy.PresenceChanges():
			done = pc.Presence.Number == ginaNum && pc.Presence.ImStatus == "offline"
		case <-purged.Done():
			t.Fatal("ivy never saw gina go offline during the cut")
		}
	}
	p, err := gina.Send("13800138000", "sent during the cut")
	if err != nil {
		t.Fatal(err)
	}
	if r, err := p.Wait(step(t, ctx)); err != nil || r.State != relaypb.MessageState_STORED {
		t.Fatalf("during the cut: %v %v, want STORED", r, err)
	}
	for len(gina.PresenceLists()) > 0 {
		<-gina.PresenceLists()
	}

	proxy.Heal()
	bound := cfg.Cluster.DeadAfter + 5*time.Second
	hctx, hcancel := context.WithTimeout(ctx, bound)
	defer hcancel()
	gotMsg, gotOnline, gotList := false, false, false
	for !gotMsg || !gotOnline || !gotList {
		select {
		case d := <-ivy.Deliveries():
			gotMsg = gotMsg || d.Text == "sent during the cut"
		case pc := <-ivy.PresenceChanges():
			gotOnline = gotOnline || (pc.Presence.Number == ginaNum && pc.Presence.ImStatus == "online")
		case pl := <-gina.PresenceLists():
			for _, pr := range pl {
				gotList = gotList || (pr.Number == ivyNum && pr.ImStatus == "online")
			}
		case <-hctx.Done():
			t.Fatalf("within %s of the heal: message to ivy %v, ivy saw gina online %v, gina got a presence list %v", bound, gotMsg, gotOnline, gotList)
		}
	}
	if st, err := a.DB.UserStatus(step(t, ctx), ginaNum); err != nil || st.IMStatus != contacts.StatusOnline {
		t.Fatalf("gina after the heal: %+v %v", st, err)
	}
	waitTrue(t, ctx, "C ready again", func() bool { code, _ := readyz(t, x); return code == 200 })
}

// A node whose NATS is not up yet keeps trying; one whose NATS never
// comes up exits after cluster.connect_timeout with an error that says so,
// and nothing else (no outbox started and stopped) is logged as failing.
func TestServeWaitsForNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for retries")
	}
	t.Run("gives up", func(t *testing.T) {
		cfg := testConfig(t)
		cfg.Cluster.NATSURL = "nats://127.0.0.1:" + fmt.Sprint(clustertest.FreePort(t))
		cfg.Cluster.ConnectTimeout = 2 * time.Second
		var logs lockedBuffer
		m := NewMain(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		m.SimOutput = discard{}
		err := m.Run(context.Background())
		m.Close()
		if err == nil {
			t.Fatal("started without NATS")
		}
		msg := err.Error()
		if !strings.Contains(msg, "cluster.connect_timeout") || strings.Contains(msg, "after 1 attempts") {
			t.Fatalf("error %q should say it retried and name cluster.connect_timeout", msg)
		}
		if !strings.Contains(logs.String(), "retrying") {
			t.Fatalf("no retry logged:\n%s", logs.String())
		}
		if s := logs.String(); strings.Contains(s, "level=ERROR") {
			t.Fatalf("a failed start logged errors besides its own:\n%s", s)
		}
	})
	t.Run("comes up late", func(t *testing.T) {
		ns := clustertest.NewNATS(t)
		cfg := testConfig(t)
		cfg.Cluster.NATSURL = ns.URL()
		cfg.Cluster.ConnectTimeout = 60 * time.Second
		var logs lockedBuffer
		m := NewMain(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		m.SimOutput = discard{}
		t.Cleanup(func() { m.Close() })
		done := make(chan error, 1)
		go func() { done <- m.Run(context.Background()) }()
		ctx := t.Context()
		waitTrue(t, ctx, "a failed attempt", func() bool { return strings.Contains(logs.String(), "retrying") })
		ns.Start()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("start once NATS is up: %v", err)
			}
		case <-step(t, ctx).Done():
			t.Fatal("did not start once NATS was up")
		}
		if _, body := readyz(t, m); !strings.Contains(body, `"cluster":"ok"`) {
			t.Fatalf("readyz: %s", body)
		}
	})
}

// tryMain is startMain for a start that may fail.
func tryMain(t *testing.T, cfg config.Config) (*Main, error) {
	t.Helper()
	m := NewMain(cfg, quietLogger())
	m.SimOutput = discard{}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		return nil, err
	}
	t.Cleanup(func() { m.Close() })
	return m, nil
}

// A NATS server that requires an nkey: a node with cluster.nkey_file joins
// (and JetStream works for it); one without is refused, and says so after
// cluster.connect_timeout; a seed file that does not exist is an error at
// once.
func TestClusterNKeyAuth(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	ns := clustertest.StartNATSWith(t, fmt.Sprintf("authorization { users = [ { nkey: %q } ] }", pub))
	seedFile := filepath.Join(t.TempDir(), "node.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	start := func(nkeyFile string) (*Main, error) {
		cfg := testConfig(t)
		cfg.Cluster.NATSURL, cfg.Cluster.NKeyFile, cfg.Cluster.ConnectTimeout = ns.URL(), nkeyFile, time.Second
		return tryMain(t, cfg)
	}
	m, err := start(seedFile)
	if err != nil {
		t.Fatalf("with the nkey: %v", err)
	}
	if _, body := readyz(t, m); !strings.Contains(body, `"cluster":"ok"`) {
		t.Fatalf("with the nkey, readyz: %s", body)
	}
	if _, err := start(""); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("without the nkey: %v, want an authorization error", err)
	}
	if _, err := start(filepath.Join(t.TempDir(), "missing.nk")); err == nil || !strings.Contains(err.Error(), "cluster.nkey_file") {
		t.Fatalf("missing seed file: %v, want an error naming cluster.nkey_file", err)
	}
}

// A NATS server that speaks TLS only and verifies client certificates: a
// node with cluster.tls_ca, tls_cert and tls_key joins; one without its
// client certificate is refused.
func TestClusterTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := testCert(t, dir, "ca", nil, nil)
	testCert(t, dir, "server", ca, caKey)
	testCert(t, dir, "client", ca, caKey)
	p := func(name string) string { return filepath.Join(dir, name) }
	ns := clustertest.StartNATSWith(t, fmt.Sprintf("tls { cert_file: %q, key_file: %q, ca_file: %q, verify: true }",
		p("server.pem"), p("server.key"), p("ca.pem")))
	start := func(cert, key string) (*Main, error) {
		cfg := testConfig(t)
		cfg.Cluster.NATSURL, cfg.Cluster.ConnectTimeout = "tls://127.0.0.1:"+fmt.Sprint(ns.Port), time.Second
		cfg.Cluster.TLSCA, cfg.Cluster.TLSCert, cfg.Cluster.TLSKey = p("ca.pem"), cert, key
		return tryMain(t, cfg)
	}
	m, err := start(p("client.pem"), p("client.key"))
	if err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if _, body := readyz(t, m); !strings.Contains(body, `"cluster":"ok"`) {
		t.Fatalf("readyz: %s", body)
	}
	if _, err := start("", ""); err == nil {
		t.Fatal("joined without a client certificate")
	}
}

// testCert writes name.pem and name.key in dir: a CA when parent is nil,
// else a certificate for 127.0.0.1 signed by parent.
func testCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}
