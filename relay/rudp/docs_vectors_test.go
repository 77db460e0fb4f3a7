package rudp_test

import (
	"bytes"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay/rudp"
)

// The UDP login's test vectors in docs/protocol.md are what the code
// computes: a client developer checks an implementation against them.
func TestProtocolDocVectors(t *testing.T) {
	doc, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- udp-test-vectors -->\n```\n")
	block, _, ok2 := strings.Cut(after, "```")
	if !ok || !ok2 {
		t.Fatal("docs/protocol.md has no udp-test-vectors block")
	}
	v := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(block), "\n") {
		k, val, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("vector line %q is not name = value", line)
		}
		v[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	bin := func(name string) []byte {
		b, err := hex.DecodeString(v[name])
		if err != nil || len(b) == 0 {
			t.Fatalf("vector %s = %q: %v", name, v[name], err)
		}
		return b
	}
	connID, err := strconv.ParseUint(v["conn_id"], 16, 64)
	if err != nil {
		t.Fatalf("conn_id: %v", err)
	}
	nonce, challenge := bin("nonce"), bin("challenge")
	if len(nonce) != rudp.NonceLen || len(challenge) != rudp.ChallengeLen {
		t.Fatalf("nonce is %d bytes, challenge %d", len(nonce), len(challenge))
	}
	th := phonebook.TokenHash(v["token"])
	for _, c := range []struct {
		name string
		got  []byte
	}{
		{"token_hash", th},
		{"udp_token_id", phonebook.UDPTokenID(th)},
		{"udp_proof", rudp.Proof(th, nonce, challenge)},
		{"session_key", rudp.DeriveKey(th, nonce, challenge, connID)},
	} {
		if want := bin(c.name); !bytes.Equal(c.got, want) {
			t.Errorf("%s: the code computes %x, docs/protocol.md says %x", c.name, c.got, want)
		}
	}
}
