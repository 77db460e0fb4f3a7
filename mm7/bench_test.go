package mm7_test

import (
	"context"
	"crypto/rand"
	"syscall"
	"testing"
	"time"

	"github.com/phonebook/phonebook/mm7"
	"github.com/phonebook/phonebook/mm7/mmscsim"
)

// BenchmarkSubmit100KiB measures MM7 submits/s to the MMSC simulator over
// real HTTP on loopback: each SubmitReq carries a 100 KiB JPEG-sized image,
// a caption and a SMIL presentation (about 137 KiB on the wire, base64),
// from 32 concurrent senders over the client's 16 connections, the way the
// MMS outbox's workers share one link. The floor is 500/s
// (docs/benchmarks.md).
//
//	go test -run '^$' -bench Submit100KiB -benchtime 5000x ./mm7/
func BenchmarkSubmit100KiB(b *testing.B) {
	sim := mmscsim.New(mmscsim.Config{Keep: 16})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		b.Fatal(err)
	}
	defer sim.Close()
	c := mm7.NewClient(mm7.ClientConfig{URL: sim.URL(), VASPID: "phonebook", VASID: "im", MaxConns: 16})
	defer c.Close()
	img := make([]byte, 100<<10)
	rand.Read(img)
	parts := []mm7.Part{{ContentType: "image/jpeg", ContentID: "img", ContentLocation: "photo.jpg", Data: img}, mm7.CaptionPart("a photo")}
	req := mm7.SubmitReq{SenderAddress: "10690042", To: []string{"+8613800138000"}, Subject: "photo",
		Parts: parts, SMIL: mm7.BuildSMIL(parts, "a photo"), DeliveryReport: true}
	b.SetBytes(int64(len(img)))
	b.SetParallelism(16) // x GOMAXPROCS senders
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := req
			if _, err := c.Submit(context.Background(), &r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "submits/s")
	// CPU time per submit, client and simulator together: what the figure
	// would be on an idle machine is about GOMAXPROCS*1e6/cpu-µs/op.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	if st := sim.Stats(); st.Submits != int64(b.N) {
		b.Fatalf("the simulator took %d of %d", st.Submits, b.N)
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
