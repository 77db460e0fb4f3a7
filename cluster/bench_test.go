package cluster_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/cluster/clustertest"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
)

const benchPairs = 1000

// BenchmarkDelivery measures online delivery of 1,000 sender/recipient
// pairs, each sender with one message in flight: a message counts when its
// sender has the DELIVERED SendResult, i.e. after the recipient's ack came
// back. "local" is one relay with the in-process router; "same-node" both
// ends on one node of a two-node cluster; "cross-node" senders on node a and
// recipients on node b.
//
//	PHONEBOOK_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' go test -run '^$' -bench Delivery -benchtime 30000x -count 3 ./cluster
func BenchmarkDelivery(b *testing.B) {
	for _, mode := range []string{"local", "same-node", "cross-node"} {
		b.Run(mode, func(b *testing.B) { benchDelivery(b, mode, benchPairs) })
	}
}

// BenchmarkDeliveryLatency is the same with 10 pairs: the cost of the
// extra hop when nothing queues.
func BenchmarkDeliveryLatency(b *testing.B) {
	for _, mode := range []string{"local", "cross-node"} {
		b.Run(mode, func(b *testing.B) { benchDelivery(b, mode, 10) })
	}
}

func benchDelivery(b *testing.B, mode string, pairs int) {
	c := newCluster(b)
	var from, to string
	switch mode {
	case "local":
		srv, err := relay.NewServer(relayConfig("solo"), relay.Deps{Auth: c.auth, Store: c.db, Directory: c.auth, Metrics: prometheus.NewRegistry()})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(ln)
		b.Cleanup(func() { srv.Shutdown(context.Background()) })
		from, to = ln.Addr().String(), ln.Addr().String()
	case "same-node":
		na := c.start("a")
		c.start("b")
		from, to = na.addr, na.addr
	case "cross-node":
		na, nb := c.start("a"), c.start("b")
		from, to = na.addr, nb.addr
	}
	dialAddr := func(addr string, i int, o client.Options) *client.Client {
		who := c.user(i)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		o.Token, o.DeviceID = "tok-"+string(who), "dev-"+string(who)
		cl, err := client.Dial(ctx, addr, o)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cl.Close() })
		return cl
	}
	senders := make([]*client.Client, pairs)
	recipients := make([]string, pairs)
	for i := range pairs {
		r := dialAddr(to, pairs+i, client.Options{AutoAck: true})
		go func() {
			for range r.Deliveries() {
			}
		}()
		recipients[i] = string(r.Number)
		senders[i] = dialAddr(from, i, client.Options{})
	}
	if mode != "local" {
		n := c.nodes["a"]
		for _, r := range recipients {
			waitFor(b, "recipients registered", func() bool { return n.router.Locate(phonebook.MSISDN(r)) != nil })
		}
	}
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	var failures atomic.Int64
	b.SetParallelism(max(1, pairs/runtime.GOMAXPROCS(0))) // about one goroutine per pair
	b.ResetTimer()
	cpu0, natsCPU0 := processCPU(), natsCPU(c.nats)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)-1) % pairs
		s, to := senders[i], recipients[i]
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			p, err := s.Send(to, "benchmark message")
			if err != nil {
				b.Error(err)
				return
			}
			r, err := p.Wait(context.Background())
			if err != nil || r.State != relaypb.MessageState_DELIVERED {
				failures.Add(1)
				continue
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	cpu, natsCPU := processCPU()-cpu0, natsCPU(c.nats)-natsCPU0
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msg/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	// CPU per message is steadier than msg/s on a shared machine: relay
	// nodes and clients (this process), and nats-server.
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(lat)), "cpu-µs/msg")
	if mode != "local" {
		b.ReportMetric(float64(natsCPU.Microseconds())/float64(len(lat)), "nats-cpu-µs/msg")
	}
	if f := failures.Load(); f > 0 {
		b.ReportMetric(float64(f), "not-delivered")
	}
	if b.N >= 1000 {
		b.Logf("%s: %d messages in %s", mode, len(lat), elapsed.Round(time.Millisecond))
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpu is the nats-server's user+system CPU time so far (Linux /proc).
func natsCPU(ns *clustertest.NATS) time.Duration {
	if ns.PID() == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ns.PID()))
	if err != nil {
		return 0
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields, in clock ticks (100 a second on Linux).
	rest := string(b[strings.LastIndexByte(string(b), ')')+2:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}
