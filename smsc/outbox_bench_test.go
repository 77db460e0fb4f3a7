package smsc_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/phonebook/phonebook/smsc/outboxbench"
	"github.com/phonebook/phonebook/store/storetest"
)

// BenchmarkOutboxMariaDB measures SMS/s drained from a MariaDB outbox
// through one link (window 100, one bind) to the simulator over TCP: claim,
// submit, record each part's message id and settle the message. b.N
// messages are measured after an untimed warm-up of 2,000. "resp=5ms" is an
// SMSC that answers each submit after 5 ms (the window then allows 20,000
// SMS/s); "resp=0s" answers at once. "fed" enqueues the messages one per
// transaction from 32 producers while the outbox drains; "receipts" asks
// for a delivery receipt per message (sent at once) and counts a message
// once its receipt is applied. Run with a fixed count, e.g.
//
//	PHONEBOOK_TEST_MYSQL_DSN='root@tcp(127.0.0.1:3306)/test' \
//	  go test -run XXX -bench OutboxMariaDB -benchtime 20000x ./smsc/
//
// `phonebook bench outbox` and scripts/bench-outbox measure the same with
// the simulator in its own process.
func BenchmarkOutboxMariaDB(b *testing.B) {
	dsn := os.Getenv(storetest.EnvDSN)
	if dsn == "" {
		b.Skipf("%s not set", storetest.EnvDSN)
	}
	benchOutbox(b, "mysql", dsn)
}

func BenchmarkOutboxSQLite(b *testing.B) {
	benchOutbox(b, "sqlite", "")
}

func benchOutbox(b *testing.B, driver, dsn string) {
	for _, delay := range []time.Duration{0, 5 * time.Millisecond} {
		for _, mode := range []string{"prefilled", "fed", "receipts"} {
			b.Run(fmt.Sprintf("resp=%s/%s", delay, mode), func(b *testing.B) {
				o := outboxbench.Options{Driver: driver, DSN: dsn, RespDelay: delay, Messages: b.N}
				switch mode {
				case "fed":
					o.Producers = 32
				case "receipts":
					o.Receipts = true
				}
				res, err := outboxbench.Run(context.Background(), o)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(res.PerSecond, "sms/s")
				b.ReportMetric(float64(res.ServerCPU)/1e3, "cpu-µs/sms")
				if res.DBCPU > 0 {
					b.ReportMetric(float64(res.DBCPU)/1e3, "db-cpu-µs/sms")
				}
			})
		}
	}
}
