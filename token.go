package phonebook

import "crypto/sha256"

// TokenHash is what the server keeps of a session token (or device key):
// its SHA-256. Over UDP it is also the key a client proves the token with
// (docs/protocol.md, "UDP"), so that the token itself never crosses the
// wire there.
func TokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// UDPTokenID is the public name of a session token in a UDP login: the
// first 16 bytes of SHA-256("phonebook udp id" || TokenHash(token)). It
// lets the server find the session without revealing anything that
// computes the proof.
func UDPTokenID(tokenHash []byte) []byte {
	h := sha256.New()
	h.Write([]byte("phonebook udp id"))
	h.Write(tokenHash)
	return h.Sum(nil)[:16]
}
