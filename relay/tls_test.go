package relay_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
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

func TestOverTLS(t *testing.T) {
	e := start(t, testConfig(), nil)
	cert, pool := selfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
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
