package relay_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/relay"
)

// selfSigned returns a certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

// writePEM writes cert's certificate and key as PEM files (relay.tls_cert,
// relay.tls_key) and returns their paths.
func writePEM(t *testing.T, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// The listener's TLS comes from the files LoadTLS reads, as serve's does.
func TestOverTLS(t *testing.T) {
	e := start(t, testConfig(), nil)
	cert, pool := selfSigned(t)
	tc, err := relay.LoadTLS(writePEM(t, cert))
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 {
		t.Fatalf("MinVersion %x", tc.MinVersion)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.Serve(ln)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	o := client.Options{TLS: &tls.Config{RootCAs: pool}}
	o.Token, o.DeviceID = "tok-alice", "dev-alice"
	a, err := client.Dial(ctx, ln.Addr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b := e.bob(client.Options{AutoAck: true}) // plain TCP: both listeners serve one relay
	p, _ := a.Send(string(bob), "over TLS")
	if _, state := wait(t, p); state != "DELIVERED" {
		t.Fatalf("state %s", state)
	}
	if d := next(t, b.Deliveries(), "delivery"); d.Text != "over TLS" {
		t.Fatalf("got %q", d.Text)
	}
	// An untrusted certificate is refused by the client.
	_, err = client.Dial(ctx, ln.Addr().String(), client.Options{Token: "tok-alice", TLS: &tls.Config{}})
	if err == nil {
		t.Fatal("dial with an untrusted certificate succeeded")
	}
}

// No files: plain TCP. One file missing, or a file that is not PEM: a
// clear error naming the relay's TLS, never a listener without TLS.
func TestLoadTLS(t *testing.T) {
	if tc, err := relay.LoadTLS("", ""); tc != nil || err != nil {
		t.Fatalf("no files: %v %v", tc, err)
	}
	cert, _ := selfSigned(t)
	certFile, keyFile := writePEM(t, cert)
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o600)
	for name, files := range map[string][2]string{
		"no key":       {certFile, ""},
		"no cert":      {"", keyFile},
		"missing file": {certFile, keyFile + ".gone"},
		"not PEM":      {garbage, keyFile},
		"swapped":      {keyFile, certFile},
	} {
		tc, err := relay.LoadTLS(files[0], files[1])
		if err == nil || tc != nil || !strings.HasPrefix(err.Error(), "relay: tls: ") {
			t.Errorf("%s: %v %v", name, tc, err)
		}
	}
}
