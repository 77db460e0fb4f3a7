package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// BenchmarkSMSOverview is the console's outbox query (queued, being
// submitted, awaiting receipt, failed in the last hour, oldest) on an
// outbox of 200,000 messages: 150,000 awaiting receipts, 30,000 failed
// over the last three days (10,000 in the last hour), 20,000 queued.
func BenchmarkSMSOverview(b *testing.B) {
	for _, engine := range []string{"sqlite", "mysql"} {
		b.Run(engine, func(b *testing.B) {
			var db *store.DB
			if engine == "sqlite" {
				db = storetest.SQLite(b)
			} else {
				db = storetest.MySQL(b)
			}
			ctx := context.Background()
			const total, batch = 200_000, 5_000
			for i := 0; i < total; i += batch {
				msgs := make([]store.SMS, batch)
				for j := range msgs {
					msgs[j] = store.SMS{Dest: fmt.Sprintf("+86138%08d", i+j), Text: "x", Kind: "verify", ExpiresAt: time.Now().Add(time.Hour)}
				}
				if _, err := db.EnqueueSMS(ctx, msgs...); err != nil {
					b.Fatal(err)
				}
			}
			// States set directly: the benchmark is about reading them.
			day := int64(24 * time.Hour / time.Microsecond)
			now := time.Now().UnixMicro()
			for _, q := range []struct {
				sql  string
				args []any
			}{
				{`UPDATE sms_outbox SET state = 'submitted' WHERE id % 20 < 15`, nil},
				{`UPDATE sms_outbox SET state = 'failed', updated_at = ? - (id % 5) * ? WHERE id % 20 >= 15 AND id % 20 < 18`, []any{now, day}},
			} {
				if _, err := db.SQL().ExecContext(ctx, q.sql, q.args...); err != nil {
					b.Fatal(err)
				}
			}
			if engine == "mysql" {
				db.SQL().ExecContext(ctx, `ANALYZE TABLE sms_outbox`)
			} else {
				db.SQL().ExecContext(ctx, `ANALYZE`)
			}
			o, err := db.SMSOverview(ctx, time.Now().Add(-time.Hour))
			if err != nil || o.Queued != 20_000 || o.Submitted != 150_000 || o.Failed != 10_000 {
				b.Fatalf("overview %+v %v", o, err)
			}
			b.ResetTimer()
			for b.Loop() {
				if _, err := db.SMSOverview(ctx, time.Now().Add(-time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
