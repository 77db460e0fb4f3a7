package bench

import (
	"context"
	"testing"
)

// BenchmarkRelay reports delivered-and-acknowledged messages per second
// and latency percentiles: go test -bench Relay -benchtime 200000x ./relay/bench
func BenchmarkRelay(b *testing.B) {
	report(b, Options{Pairs: 50, Window: 64, Messages: max(b.N, 1000)})
}

// BenchmarkRelayLatency sends one message at a time per pair, so the
// percentiles show the relay's own latency rather than queueing.
func BenchmarkRelayLatency(b *testing.B) {
	report(b, Options{Pairs: 50, Window: 1, Messages: max(b.N, 1000)})
}

func report(b *testing.B, o Options) {
	r, err := Run(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	if r.Failed > 0 {
		b.Fatalf("%d messages not delivered", r.Failed)
	}
	b.ReportMetric(r.PerSecond, "msg/s")
	b.ReportMetric(float64(r.P50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.P99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(r.P999.Microseconds()), "p999-µs")
	b.ReportMetric(float64(r.CPUPerMessage.Nanoseconds()), "cpu-ns/msg")
	b.Log(r)
}

func TestRunSmall(t *testing.T) {
	r, err := Run(context.Background(), Options{Pairs: 4, Messages: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if r.Messages != 2000 || r.Failed != 0 {
		t.Fatalf("%v", r)
	}
}

// BenchmarkRelay1000Pairs is the load: 1,000 online pairs, 100-byte
// texts, each delivered, acknowledged and answered with a receipt.
//
//	go test -run '^$' -bench Relay1000Pairs -benchtime 300000x ./relay/bench
func BenchmarkRelay1000Pairs(b *testing.B) {
	report(b, Options{Pairs: 1000, Window: 8, Messages: max(b.N, 10000)})
}
