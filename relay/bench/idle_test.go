package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/phonebook/phonebook/relay"
)

const (
	envIdleConns = "PHONEBOOK_BENCH_IDLE_CONNS" // how many connections to measure
	envIdleAddr  = "PHONEBOOK_BENCH_IDLE_ADDR"  // set in the child
)

// TestIdleConnectionHolder is the child process of TestIdleConnectionMemory.
func TestIdleConnectionHolder(t *testing.T) {
	addr := os.Getenv(envIdleAddr)
	if addr == "" {
		t.Skip("child of TestIdleConnectionMemory")
	}
	n, _ := strconv.Atoi(os.Getenv(envIdleConns))
	conns, err := HoldConnections(context.Background(), addr, 0, n)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready", len(conns))
	os.Stdin.Read(make([]byte, 1)) // hold until the parent closes stdin
}

// TestIdleConnectionMemory measures the server's memory per idle,
// authenticated TCP connection:
//
//	PHONEBOOK_BENCH_IDLE_CONNS=18000 go test -run IdleConnectionMemory -v ./relay/bench
func TestIdleConnectionMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(envIdleConns))
	if n == 0 || os.Getenv(envIdleAddr) != "" {
		t.Skip("set " + envIdleConns + " to measure")
	}
	ctx := context.Background()
	cfg := relay.Config{HeartbeatInterval: 5 * time.Minute} // nothing times out while connecting
	srv, addr, stop, err := Server(ctx, n, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	before := ReadMemStats()
	cmd := exec.Command(os.Args[0], "-test.run=^TestIdleConnectionHolder$")
	cmd.Env = append(os.Environ(), envIdleAddr+"="+addr)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if len(line) >= 5 && line[:5] == "ready" {
			break
		}
		if len(line) >= 6 && line[:6] == "error:" {
			t.Fatal(line)
		}
	}
	for len(srv.Connections()) < n {
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	after := ReadMemStats()
	per := func(a, b uint64) float64 { return float64(int64(a)-int64(b)) / float64(n) }
	t.Logf("%d idle authenticated connections (set up in %s): RSS +%.0f B/conn, heap +%.0f B/conn, stacks +%.0f B/conn; RSS total %d MiB",
		n, took.Round(time.Millisecond), per(after.RSS, before.RSS), per(after.HeapInuse, before.HeapInuse),
		per(after.StackSys, before.StackSys), after.RSS>>20)
}
