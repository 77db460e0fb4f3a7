// Package bench measures the relay end to end over TCP: client pairs on
// this machine send texts to each other through an in-process relay, and
// every message counts once its sender holds the SendResult DELIVERED,
// which the relay sends only after the recipient acknowledged it. It backs
// `phonebook bench relay` and the package's Go benchmarks.
package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/relaytest"
	"github.com/phonebook/phonebook/store"
)

// Options configures Run. Zero values mean the defaults in parentheses.
type Options struct {
	Pairs    int // sender/recipient pairs (50)
	Messages int // messages in total (200000)
	TextSize int // bytes per text (100)
	Window   int // messages in flight per sender (64)
	// Rate, when set, offers messages at this many per second in all
	// (spread over the senders) instead of as fast as the window allows, so
	// latency can be read at a given load.
	Rate float64
	// Store receives chat records and offline messages; nil opens a
	// SQLite file in a temporary directory, removed afterwards.
	Store relay.Store
	// Config for the relay; the rate limit is lifted unless set.
	Config relay.Config
	// Addr, when set, is a relay already running with ServerAt (in another
	// process) for at least 2×Pairs users; Run then only generates load, so
	// the server's CPU and garbage collector are measured without it.
	Addr string
}

// Result is what Run measured.
type Result struct {
	Messages  int
	Failed    int // SendResults other than DELIVERED
	Elapsed   time.Duration
	PerSecond float64
	P50       time.Duration
	P99       time.Duration
	P999      time.Duration
	Max       time.Duration
	// CPU is the process's user+system CPU time during the run (server and
	// clients together), per message: steadier than msg/s on a shared
	// machine.
	CPUPerMessage time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%d messages in %s: %.0f msg/s; latency p50 %s p99 %s p99.9 %s max %s; CPU %s/msg; %d not delivered",
		r.Messages, r.Elapsed.Round(time.Millisecond), r.PerSecond, r.P50, r.P99, r.P999, r.Max, r.CPUPerMessage, r.Failed)
}

// Number returns the i-th benchmark phone number.
func Number(i int) phonebook.MSISDN { return phonebook.MSISDN(fmt.Sprintf("+86139%08d", i)) }

// Token returns the i-th benchmark token.
func Token(i int) string { return fmt.Sprintf("bench-token-%d", i) }

// Server starts a relay for n users (Number(i), Token(i)) on 127.0.0.1.
// stop shuts it down and removes a temporary store.
func Server(ctx context.Context, n int, cfg relay.Config, st relay.Store) (srv *relay.Server, addr string, stop func(), err error) {
	return ServerAt(ctx, "127.0.0.1:0", n, cfg, st)
}

// ServerAt is Server listening on listenAddr, for a load generator in
// another process (`phonebook bench relay-server`).
func ServerAt(ctx context.Context, listenAddr string, n int, cfg relay.Config, st relay.Store) (srv *relay.Server, addr string, stop func(), err error) {
	var cleanup []func()
	stop = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	if st == nil {
		dir, err := os.MkdirTemp("", "phonebook-bench-")
		if err != nil {
			return nil, "", nil, err
		}
		cleanup = append(cleanup, func() { os.RemoveAll(dir) })
		db, err := store.Open(ctx, store.Options{Driver: "sqlite", DSN: filepath.Join(dir, "bench.db")})
		if err != nil {
			stop()
			return nil, "", nil, err
		}
		cleanup = append(cleanup, func() { db.Close() })
		if _, err := db.Migrate(ctx); err != nil {
			stop()
			return nil, "", nil, err
		}
		st = db
	}
	toks := relaytest.NewTokens()
	for i := range n {
		toks.Add(Token(i), Number(i), "bench-"+string(Number(i)))
	}
	if cfg.SendRate == 0 {
		cfg.SendRate, cfg.SendBurst = 1e9, 1e9
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "bench"
	}
	srv, err = relay.NewServer(cfg, relay.Deps{Auth: toks, Store: st})
	if err != nil {
		stop()
		return nil, "", nil, err
	}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		stop()
		return nil, "", nil, err
	}
	go srv.Serve(ln)
	cleanup = append(cleanup, func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(c)
	})
	return srv, ln.Addr().String(), stop, nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Run starts a relay, connects the pairs and sends the messages.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Pairs <= 0 {
		o.Pairs = 50
	}
	if o.Messages <= 0 {
		o.Messages = 200000
	}
	if o.TextSize <= 0 {
		o.TextSize = 100
	}
	if o.Window <= 0 {
		o.Window = 64
	}
	addr := o.Addr
	if addr == "" {
		var stop func()
		var err error
		if _, addr, stop, err = Server(ctx, 2*o.Pairs, o.Config, o.Store); err != nil {
			return Result{}, err
		}
		defer stop()
	}

	senders := make([]*client.Client, o.Pairs)
	for i := range 2 * o.Pairs {
		c, err := client.Dial(ctx, addr, client.Options{Token: Token(i), AutoAck: true, Buffer: 4 * o.Window})
		if err != nil {
			return Result{}, fmt.Errorf("bench: connect client %d: %w", i, err)
		}
		defer c.Close()
		if i < o.Pairs {
			senders[i] = c
		} else {
			go func() {
				for range c.Deliveries() {
				}
			}()
		}
	}
	text := strings.Repeat("x", o.TextSize)
	per := o.Messages / o.Pairs
	lat := make([][]time.Duration, o.Pairs)
	failed := make([]int, o.Pairs)
	errs := make([]error, o.Pairs)
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for i, c := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := string(Number(o.Pairs + i))
			lat[i] = make([]time.Duration, 0, per)
			type inflight struct {
				p  *client.Pending
				at time.Time
			}
			ring := make([]inflight, 0, o.Window)
			settle := func(f inflight) bool {
				r, err := f.p.Wait(ctx)
				if err != nil {
					errs[i] = err
					return false
				}
				lat[i] = append(lat[i], f.p.At().Sub(f.at))
				if r.State.String() != "DELIVERED" {
					failed[i]++
				}
				return true
			}
			var interval time.Duration
			if o.Rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(o.Pairs) / o.Rate)
			}
			for k := range per {
				if interval > 0 {
					// Senders are staggered so that the offered load is even,
					// not a burst of one message per sender every interval.
					phase := interval * time.Duration(i) / time.Duration(o.Pairs)
					if d := time.Until(start.Add(time.Duration(k)*interval + phase)); d > 0 {
						time.Sleep(d)
					}
				}
				if len(ring) == o.Window {
					if !settle(ring[0]) {
						return
					}
					ring = ring[1:]
				}
				at := time.Now()
				p, err := c.Send(to, text)
				if err != nil {
					errs[i] = err
					return
				}
				ring = append(ring, inflight{p, at})
			}
			for _, f := range ring {
				if !settle(f) {
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime() - cpu0
	if err := errors.Join(errs...); err != nil {
		return Result{}, fmt.Errorf("bench: %w", err)
	}
	var all []time.Duration
	res := Result{Elapsed: elapsed}
	for i := range lat {
		all = append(all, lat[i]...)
		res.Failed += failed[i]
	}
	res.Messages = len(all)
	res.PerSecond = float64(len(all)) / elapsed.Seconds()
	if len(all) > 0 {
		res.CPUPerMessage = cpu / time.Duration(len(all))
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) time.Duration {
		if len(all) == 0 {
			return 0
		}
		return all[min(len(all)-1, int(p*float64(len(all))))]
	}
	res.P50, res.P99, res.P999, res.Max = q(0.5), q(0.99), q(0.999), q(1)
	return res, nil
}
