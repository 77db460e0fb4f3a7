package smsc_test

import (
	"context"
	"testing"

	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// BenchmarkSubmit measures submit_sm round trips through the router to the
// simulator over TCP on 127.0.0.1, with a window of 100 kept full.
func BenchmarkSubmit(b *testing.B) {
	sim := startSim(b, smscsim.Config{})
	cfg := linkCfg("a", sim.Addr())
	cfg.Window = 100
	r := startRouter(b, nil, cfg)
	waitBound(b, r, "a")
	p := part(cnMobile, "Your Phonebook code is 123456")
	b.SetParallelism(64) // enough submitters to keep the window full
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if _, err := r.Submit(ctx, p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "submits/s")
	var _ smsc.Submitter = r
}
