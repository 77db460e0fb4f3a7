package relay

import (
	"crypto/tls"
	"fmt"
)

// LoadTLS is the TLS configuration for the relay's TCP listener
// (tls.NewListener) from a PEM certificate file, which may hold the chain,
// and its key file: TLS 1.2 at least. Neither file given: nil, plain TCP.
func LoadTLS(certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("relay: tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
