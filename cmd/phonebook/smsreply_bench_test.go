package main

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
)

// BenchmarkSMSReplyToIM measures, on MariaDB, the time from a reply by SMS
// leaving the simulator (an MO to a conversation's extension, over SMPP)
// to its IM user's client receiving it, with MOs offered at 500 per
// second, spread over 200 online users each in a conversation with a
// number without the app.
//
//	PHONEBOOK_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' \
//	  go test -run '^$' -bench SMSReplyToIM -benchtime 10000x ./cmd/phonebook
func BenchmarkSMSReplyToIM(b *testing.B) {
	const users, rate = 200, 500
	cfg := config4bench(b)
	cfg.SMSReply.Mode = "extension"
	m := NewMain(cfg, quietLogger())
	m.SimOutput = discard{}
	if err := m.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	ctx := context.Background()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}

	type conv struct {
		bob, to string
		c       *client.Client
	}
	convs := make([]conv, users)
	var mu sync.Mutex
	sent := make(map[string]time.Time, b.N)
	lat := make([]time.Duration, 0, b.N)
	got := make(chan struct{}, b.N)
	for i := range convs {
		alice := fmt.Sprintf("+86136%08d", i)
		bob := fmt.Sprintf("+86137%08d", i)
		id := client.Identity{DeviceID: fmt.Sprint("imei-", i), SIMID: "sim"}
		creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", alice, id)
		if err != nil {
			b.Fatal(err)
		}
		sess, err := api.Login(ctx, alice, id, creds.DeviceKey, "")
		if err != nil {
			b.Fatal(err)
		}
		c, err := client.Dial(ctx, m.RelayAddr(), client.Options{Token: sess.Token, DeviceID: id.DeviceID, AutoAck: true})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		// The conversation Alice's fallback SMS would have started.
		ext, err := m.DB.NoteSMSFallback(ctx, phonebook.MSISDN(alice), phonebook.MSISDN(bob), cfg.SMSReply.ExtensionDigits, cfg.SMSReply.ExtensionIdle, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		convs[i] = conv{bob: bob, to: cfg.Verify.ShortNumber + ext, c: c}
		go func() {
			for d := range c.Deliveries() {
				at := time.Now()
				mu.Lock()
				if t, ok := sent[d.Text]; ok {
					lat = append(lat, at.Sub(t))
					delete(sent, d.Text)
				}
				mu.Unlock()
				got <- struct{}{}
			}
		}()
	}

	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	b.ResetTimer()
	cpu0 := cpuTime()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		if d := time.Until(t0.Add(time.Duration(i) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
		cv := convs[i%users]
		text := fmt.Sprintf("好的 👍 reply %d", i)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			mu.Lock()
			sent[text] = time.Now()
			mu.Unlock()
			if err := m.Sim.InjectMO(ctx, cv.bob, cv.to, text); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	offered := float64(b.N) / time.Since(t0).Seconds()
	deadline := time.After(time.Minute)
	for range b.N {
		select {
		case <-got:
		case <-deadline:
			b.Fatalf("%d of %d replies reached their users", len(lat), b.N)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(offered, "MO/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max_ms")
	// Server, simulator and clients together: they share this process.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu_us/MO")
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
