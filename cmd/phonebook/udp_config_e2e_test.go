package main

import (
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/phonebook/phonebook/internal/poll"
)

// relay.udp's limits reach the UDP transport serve runs: with
// unauth_rate 1 and unauth_burst 3, thirty unauthenticated datagrams from
// one address see at most four through (the burst, and one refill) and
// the rest counted as rate_limited; a datagram over max_datagram is
// dropped as too large, one at it is read.
func TestRelayUDPKeysReachTheTransport(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.UDP.UnauthRate, cfg.Relay.UDP.UnauthBurst = 1, 3
	cfg.Relay.UDP.MaxDatagram = 400
	m := startMain(t, cfg)
	conn, err := net.Dial("udp", m.RelayUDPAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const sent = 30
	start := time.Now()
	for range sent {
		if _, err := conn.Write([]byte("not a datagram of this protocol")); err != nil {
			t.Fatal(err)
		}
	}
	dropped := func(reason string) int {
		_, body := get(t, "http://"+m.AdminAddr()+"/metrics", "")
		re := regexp.MustCompile(`phonebook_relay_udp_dropped_total\{reason="` + reason + `"\} (\d+)`)
		mm := re.FindStringSubmatch(body)
		if mm == nil {
			return 0
		}
		n, _ := strconv.Atoi(mm[1])
		return n
	}
	// Every datagram is accounted for: let through the limit (and then
	// dropped as not of this protocol) or rate_limited.
	passed := func() int { return dropped("malformed") + dropped("unknown_conn") + dropped("bad_tag") }
	poll.Until(t, "the datagrams to be counted", func() bool { return passed()+dropped("rate_limited") == sent })
	// The burst, and one more for each second the sending and counting
	// took (a loaded machine may take several).
	elapsed := time.Since(start)
	if through, most := passed(), 3+int(elapsed.Seconds())+1; through < 3 || through > most {
		t.Fatalf("%d of %d unauthenticated datagrams got past a limit of 1/s, burst 3, in %v (at most %d)", through, sent, elapsed, most)
	}
	// The bucket is empty now: an oversized datagram is let through once
	// it refills (one a second), then dropped as too large.
	poll.Until(t, "a 401-byte datagram dropped as too large", func() bool {
		if _, err := conn.Write(make([]byte, 401)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		return dropped("too_large") >= 1
	})
	// One at the limit is read (and dropped as not of this protocol once
	// the bucket allows): only 400-byte datagrams are sent now, and a
	// too-large one would never count here.
	poll.Until(t, "a 400-byte datagram read", func() bool {
		n := passed()
		if _, err := conn.Write(make([]byte, 400)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		return passed() > n
	})
}
