package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// A partition repeats the same warnings every few hundred milliseconds:
// the first is logged, the next ones only once per interval, with how
// many were left out; another kind is logged on its own.
func TestLogLimiter(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := newLogLimiter(50 * time.Millisecond)
	for range 10 {
		l.warn(log, "heartbeat", "cluster: heartbeat failed")
	}
	l.warn(log, "watcher", "cluster: KV watcher ended")
	if n := strings.Count(buf.String(), "heartbeat failed"); n != 1 {
		t.Fatalf("logged %d times within the interval:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "KV watcher ended") {
		t.Fatalf("another kind was suppressed:\n%s", buf.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(buf.String(), "heartbeat failed") < 2 {
		if time.Now().After(deadline) {
			t.Fatal("never logged again after the interval")
		}
		time.Sleep(10 * time.Millisecond)
		l.warn(log, "heartbeat", "cluster: heartbeat failed")
	}
	if !strings.Contains(buf.String(), "repeats_not_logged=") {
		t.Fatalf("the next line does not count the left-out repeats:\n%s", buf.String())
	}
}
