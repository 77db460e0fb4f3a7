package smsc_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// BenchmarkOutboxMariaDB measures SMS/s drained from a MariaDB outbox
// through one link (window 100) to the simulator over TCP: claim, submit,
// record each part's message id and settle the message. b.N messages are
// queued before the clock starts, after an untimed warm-up run of 2,000.
// Run with a fixed count, e.g.
//
//	PHONEBOOK_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' \
//	  go test -run XXX -bench OutboxMariaDB -benchtime 20000x ./smsc/
//
// "receipts" also asks for a delivery receipt for every message (the
// simulator sends it at once) and stops the clock when all are delivered.
func BenchmarkOutboxMariaDB(b *testing.B) {
	for _, receipts := range []bool{false, true} {
		b.Run(fmt.Sprint("receipts=", receipts), func(b *testing.B) {
			benchOutbox(b, storetest.MySQL(b), receipts)
		})
	}
}

func BenchmarkOutboxSQLite(b *testing.B) {
	benchOutbox(b, storetest.SQLite(b), false)
}

func benchOutbox(b *testing.B, db *store.DB, receipts bool) {
	ctx := context.Background()
	sim := startSim(b, smscsim.Config{})
	cfg := smsc.OutboxConfig{NodeID: "bench", Batch: 500, Workers: 100, Poll: 10 * time.Millisecond, NoReceipts: !receipts, FlushSize: 1024}
	// Receipts come as fast as submits: enough deliver workers let the
	// outbox's group commit store them in large batches.
	s := newStack(b, db, sim, 100, cfg, func(lc *smsc.LinkConfig) { lc.DeliverWorkers, lc.DeliverQueue = 128, 1024 })
	enqueue := func(n int) {
		msgs := make([]store.SMS, n)
		for i := range msgs {
			msgs[i] = store.SMS{Dest: string(cnMobile), Text: fmt.Sprintf("Your Phonebook code is %06d", i), Kind: "verify",
				ExpiresAt: time.Now().Add(time.Hour)}
		}
		for start := 0; start < len(msgs); start += 1000 {
			if _, err := db.EnqueueSMS(ctx, msgs[start:min(start+1000, len(msgs))]...); err != nil {
				b.Fatal(err)
			}
		}
	}
	drain := func(total int) {
		for {
			var n int
			if err := db.SQL().QueryRowContext(ctx, "SELECT COUNT(*) FROM sms_outbox WHERE state = ?", want(receipts)).Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n == total {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Warm up connections and caches with a first, untimed run.
	const warm = 2000
	enqueue(warm)
	stop := s.run()
	drain(warm)
	stop()
	refused := sim.Stats().DeliverRefused

	enqueue(b.N)
	b.ResetTimer()
	stop = s.run()
	drain(warm + b.N)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sms/s")
	b.ReportMetric(float64(sim.Stats().DeliverRefused-refused), "receipts-refused")
	if got := sim.Stats().Submits; got != int64(warm+b.N) {
		b.Fatalf("simulator accepted %d submits for %d messages", got, warm+b.N)
	}
}

func want(receipts bool) string {
	if receipts {
		return smsc.StateDelivered
	}
	return smsc.StateSubmitted
}
