package smsc_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// One bound link makes the SMS side ready; with none bound, the check
// names every link and why it is down.
func TestRouterReady(t *testing.T) {
	sim := startSim(t, smscsim.Config{})
	dead := deadAddr(t)
	r := startRouter(t, nil, linkCfg("a", sim.Addr()), linkCfg("b", dead))
	waitBound(t, r, "a")
	if err := r.Ready(context.Background()); err != nil {
		t.Fatalf("one link of two bound: %v", err)
	}

	down := startRouter(t, nil, linkCfg("b", dead), linkCfg("c", dead))
	poll.Until(t, "both links' connect errors", func() bool {
		for _, s := range down.States() {
			if s.LastError == "" {
				return false
			}
		}
		return true
	})
	err := down.Ready(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "no SMSC link is bound: b (") || !strings.Contains(err.Error(), ", c (") {
		t.Fatalf("no link bound: %v", err)
	}
}
