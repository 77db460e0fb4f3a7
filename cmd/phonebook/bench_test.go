package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/store/storetest"
)

// BenchmarkVerifyStartToSMSC measures, on MariaDB, the time from "start
// verification" (the HTTP request leaving the client) to the code SMS
// arriving at the SMSC (the simulator over TCP), with starts offered at 500
// per second.
//
//	PHONEBOOK_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' go test -run '^$' -bench VerifyStartToSMSC -benchtime 5000x ./cmd/phonebook
func BenchmarkVerifyStartToSMSC(b *testing.B) {
	cfg := config4bench(b)
	m := NewMain(cfg, quietLogger())
	m.SimOutput = discard{}
	if err := m.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	const rate = 500
	ctx := context.Background()
	var mu sync.Mutex
	started := make(map[string]time.Time, b.N)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		if d := time.Until(t0.Add(time.Duration(i) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
		num := fmt.Sprintf("8613%09d", 100000000+i)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			mu.Lock()
			started[num] = time.Now()
			mu.Unlock()
			if _, err := api.StartSMS(ctx, "+"+num, client.Identity{DeviceID: "d" + num, SIMID: "s"}); err != nil {
				b.Error(err)
			}
		}()
	}
	wg.Wait()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	subs, err := m.Sim.WaitSubmits(wctx, b.N)
	if err != nil {
		b.Fatalf("%d of %d SMS at the SMSC: %v", len(m.Sim.Submits()), b.N, err)
	}
	b.StopTimer()
	lat := make([]time.Duration, 0, len(subs))
	for _, s := range subs {
		if st, ok := started[strings.TrimPrefix(s.Dest, "+")]; ok {
			lat = append(lat, s.Time.Sub(st))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "starts/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ms")
}

func config4bench(b *testing.B) config.Config {
	cfg := testConfigTB(b)
	cfg.Database.Driver, cfg.Database.DSN = "mysql", storetest.MySQLDSN(b)
	cfg.Verify.MaxPerIPHour, cfg.Verify.MaxPerPrefixHour, cfg.Verify.MaxPerNumberDay = 1<<30, 1<<30, 1<<30
	return cfg
}
