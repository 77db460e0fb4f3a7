package relay_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store"
)

const (
	envCrashDB   = "PHONEBOOK_RELAY_CRASH_DB"
	envCrashAddr = "PHONEBOOK_RELAY_CRASH_ADDR"
)

// TestCrashChildServer is the server process TestCrashLosesNothingAcknowledged
// kills; on its own it does nothing.
func TestCrashChildServer(t *testing.T) {
	path := os.Getenv(envCrashDB)
	if path == "" {
		t.Skip("runs only as the child of TestCrashLosesNothingAcknowledged")
	}
	ctx := context.Background()
	db, err := store.Open(ctx, store.Options{Driver: "sqlite", DSN: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	a := newTokenAuth()
	srv, err := relay.NewServer(testConfig(), relay.Deps{Auth: a, Store: db, Directory: a})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tmp := os.Getenv(envCrashAddr) + ".tmp"
	os.WriteFile(tmp, []byte(ln.Addr().String()), 0o600)
	os.Rename(tmp, os.Getenv(envCrashAddr))
	srv.Serve(ln) // until SIGKILL
}

func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	dbPath, addrFile := filepath.Join(dir, "relay.db"), filepath.Join(dir, "addr")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChildServer$", "-test.v")
	cmd.Env = append(os.Environ(), envCrashDB+"="+dbPath, envCrashAddr+"="+addrFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	// Each phase has its own deadline: on a loaded machine a -race child's
	// start or 400 answers may take minutes, and a deadline spent by one
	// phase would make the next fail (or, below, lose answers that did
	// arrive).
	phase := func() context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		t.Cleanup(cancel)
		return ctx
	}
	var addr string
	for started := phase(); addr == ""; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(addrFile); err == nil {
			addr = string(b)
		} else if started.Err() != nil {
			t.Fatal("the child server never wrote its address")
		}
	}
	a, err := client.Dial(phase(), addr, client.Options{Token: "tok-alice", DeviceID: "dev-alice"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	// Send N to offline bob; kill the server halfway through the answers,
	// while the rest are still being stored.
	const n = 400
	pend := make([]*client.Pending, n)
	for i := range n {
		if pend[i], err = a.Send(string(bob), fmt.Sprintf("crash %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := phase()
	for i := range n / 2 {
		if r, err := pend[i].Wait(ctx); err != nil || r.State.String() != "STORED" {
			t.Fatalf("message %d before the crash: %v %v", i, r, err)
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no drain, no flush
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	acked := map[string]string{}
	ctx = phase()
	for i, p := range pend {
		// The lost connection fails every send still unanswered.
		if r, err := p.Wait(ctx); err == nil {
			acked[r.ServerMsgId] = fmt.Sprintf("crash %d", i)
		}
	}
	if len(acked) < n/2 {
		t.Fatalf("only %d acknowledged, but %d were seen before the kill", len(acked), n/2)
	}
	t.Logf("%d of %d messages acknowledged before SIGKILL", len(acked), n)

	// Restart on the same file: every acknowledged message reaches bob.
	db, err := store.Open(phase(), store.Options{Driver: "sqlite", DSN: dbPath})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := start(t, testConfig(), db)
	b := e.bob(client.Options{AutoAck: true, Buffer: n + 1})
	got := map[string]bool{}
	for missing := len(acked); missing > 0; {
		d := next(t, b.Deliveries(), "delivery after restart")
		if want, ok := acked[d.ServerMsgId]; ok && !got[d.ServerMsgId] {
			if d.Text != want {
				t.Fatalf("message %s: %q, want %q", d.ServerMsgId, d.Text, want)
			}
			got[d.ServerMsgId] = true
			missing--
		}
	}
}
