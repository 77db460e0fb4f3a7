package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// TestMain lets the test binary act as the phonebook binary, so crash tests
// can run the real server as a child process and SIGKILL it.
func TestMain(m *testing.M) {
	if args := os.Getenv("PHONEBOOK_TEST_EXEC"); args != "" {
		// As main does: SIGTERM shuts the server down gracefully.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		cmd := newRootCmd()
		cmd.SetArgs(splitArgs(args))
		if err := cmd.ExecuteContext(ctx); err != nil {
			fmt.Fprintln(os.Stderr, "phonebook:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func splitArgs(s string) []string {
	var out []string
	for _, f := range regexp.MustCompile(`\S+`).FindAllString(s, -1) {
		out = append(out, f)
	}
	return out
}

// child is a phonebook server running as a separate process.
type child struct {
	cmd   *exec.Cmd
	http  string
	relay string
}

var servingRE = regexp.MustCompile(`msg="phonebook serving" http=(\S+) relay=(\S*)`)

func startChild(t *testing.T, configPath string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PHONEBOOK_TEST_EXEC=serve --config "+configPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan []string, 1)
	exited := make(chan struct{})
	var mu sync.Mutex
	var lines []string // the child's output until it served, for a failed start
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		serving := false
		for sc.Scan() {
			if serving {
				continue
			}
			mu.Lock()
			lines = append(lines, sc.Text())
			if len(lines) > 40 {
				lines = lines[1:]
			}
			mu.Unlock()
			if m := servingRE.FindStringSubmatch(sc.Text()); m != nil {
				serving = true
				addr <- m
			}
		}
	}()
	c := &child{cmd: cmd}
	t.Cleanup(func() { c.cmd.Process.Kill(); c.cmd.Wait() })
	failed := func(why string) {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("child server %s; its output:\n%s", why, strings.Join(lines, "\n"))
	}
	select {
	case m := <-addr:
		c.http, c.relay = m[1], m[2]
	case <-exited:
		failed("exited before serving")
	case <-time.After(stepPatience):
		failed(fmt.Sprintf("did not start within %v", stepPatience))
	}
	return c
}

func (c *child) kill() {
	c.cmd.Process.Signal(syscall.SIGKILL)
	c.cmd.Wait()
}

// crashConfig writes a serve config with a temp SQLite database and one SMPP
// link to an address nothing listens on yet (the SMSC is down); extra adds
// settings to the link, e.g. "resp_timeout: 10s". It returns the config's
// path and the SMSC address.
func crashConfig(t *testing.T, extra string) (cfgPath, smscAddr string) {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	smscAddr = l.Addr().String()
	l.Close()
	if extra != "" {
		extra += ", "
	}
	cfgPath = filepath.Join(dir, "phonebook.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
http: {addr: "127.0.0.1:0"}
relay: {tcp_addr: "127.0.0.1:0", udp_addr: ""}
admin: {addr: "127.0.0.1:0"}
database: {dsn: %q}
verify: {max_per_ip_hour: 100000, max_per_prefix_hour: 100000}
smsc:
  links:
    - {name: a, addr: %q, system_id: pb, window: 100, %sreconnect_min: 50ms, reconnect_max: 200ms}
`, filepath.Join(dir, "pb.db"), smscAddr, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, smscAddr
}

// queueVerifications starts n SMS verifications at srv, for the numbers
// prefix followed by 00000000 to n-1, 16 at a time; each queues an SMS.
// Each request has its own deadline (stepPatience): under load a thousand
// starts take minutes, and none of them may eat the time of the next.
func queueVerifications(t *testing.T, srv *child, prefix string, n int) {
	t.Helper()
	api := &client.API{BaseURL: "http://" + srv.http}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			ctx, cancel := context.WithTimeout(t.Context(), stepPatience)
			defer cancel()
			_, err := api.StartSMS(ctx, fmt.Sprintf("%s%08d", prefix, i), client.Identity{DeviceID: fmt.Sprintf("d%d", i), SIMID: "s"})
			if err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("start verification: %v", err)
	}
}

// The server is SIGKILLed while 1,000 SMS wait in the outbox (the SMSC is
// down); after a restart, with the SMSC up, every one is sent, none twice.
func TestOutboxSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns servers")
	}
	cfgPath, smscAddr := crashConfig(t, "")

	const n = 1000
	srv := startChild(t, cfgPath)
	queueVerifications(t, srv, "+86138", n)
	srv.kill()

	sim := smscsim.New(smscsim.Config{})
	if err := sim.Start(smscAddr); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	startChild(t, cfgPath)
	if _, err := sim.WaitSubmits(step(t, t.Context()), n); err != nil {
		t.Fatalf("after restart only %d of %d SMS reached the SMSC: %v", len(sim.Submits()), n, err)
	}
	// Give a duplicate every chance to show up before counting.
	time.Sleep(time.Second)
	seen := map[string]int{}
	for _, s := range sim.Submits() {
		seen[s.Dest]++
	}
	if len(seen) != n {
		t.Fatalf("%d distinct recipients, want %d", len(seen), n)
	}
	for dest, c := range seen {
		if c != 1 {
			t.Fatalf("%s got %d SMS", dest, c)
		}
	}
}

// SIGTERM while 1,000 SMS are in flight (claimed, a window's worth
// written and waiting for slow responses): the server stops claiming,
// waits for the responses, records them and only then unbinds, so after a
// restart the SMSC receives every SMS exactly once.
func TestOutboxSIGTERMSendsNoDuplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns servers")
	}
	cfgPath, smscAddr := crashConfig(t, "resp_timeout: 10s")

	const n = 1000
	// Queue n codes while the SMSC is down.
	srv := startChild(t, cfgPath)
	queueVerifications(t, srv, "+86139", n)
	// The SMSC comes up, answering each submit after a second: the server
	// claims every message and fills its window of 100, so draining all
	// of them would take ten seconds, far longer than a shutdown. No
	// receipt comes during the test: busy receipt handlers would hold an
	// early unbind back.
	sim := smscsim.New(smscsim.Config{RespDelay: time.Second, ReceiptDelay: time.Hour})
	if err := sim.Start(smscAddr); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	if _, err := sim.WaitSubmits(step(t, t.Context()), 150); err != nil {
		t.Fatal(err)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() { exited <- srv.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("server exited with %v after SIGTERM", err)
		}
	case <-time.After(stepPatience):
		t.Fatalf("server still running %v after SIGTERM", stepPatience)
	}
	before := len(sim.Submits())
	if before >= n {
		t.Fatalf("every SMS (%d) was sent before the shutdown ended: the server went on claiming after SIGTERM", before)
	}
	startChild(t, cfgPath)
	if _, err := sim.WaitSubmits(step(t, t.Context()), n); err != nil {
		t.Fatalf("after restart only %d of %d SMS reached the SMSC: %v", len(sim.Submits()), n, err)
	}
	// Give a duplicate every chance to show up before counting.
	time.Sleep(time.Second)
	seen := map[string]int{}
	dups := 0
	for _, s := range sim.Submits() {
		if seen[s.Dest]++; seen[s.Dest] > 1 {
			dups++
		}
	}
	t.Logf("%d SMS sent before SIGTERM, %d after the restart, %d duplicates", before, len(sim.Submits())-before, dups)
	if len(seen) != n || dups != 0 {
		t.Fatalf("%d distinct recipients (want %d), %d duplicates (want 0)", len(seen), n, dups)
	}
}
