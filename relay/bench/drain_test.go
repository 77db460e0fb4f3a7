package bench

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// TestDrainSmall proves the drain measurement delivers every stored message.
func TestDrainSmall(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := Drain(ctx, 20, 2000, storetest.SQLite(t), relay.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Messages != 2000 || res.Elapsed <= 0 {
		t.Fatalf("%+v", res)
	}
}

// BenchmarkOfflineDrain: 100,000 stored messages delivered when 1,000 users
// log in. PHONEBOOK_BENCH_DRAIN_MYSQL=1 uses MariaDB (PHONEBOOK_TEST_MYSQL_DSN)
// instead of SQLite; PHONEBOOK_BENCH_DRAIN_MESSAGES changes the count.
//
//	go test -run '^$' -bench OfflineDrain -benchtime 1x ./relay/bench
func BenchmarkOfflineDrain(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("PHONEBOOK_BENCH_DRAIN_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	for i := 0; i < b.N; i++ {
		var db *store.DB
		if os.Getenv("PHONEBOOK_BENCH_DRAIN_MYSQL") == "1" {
			db = storetest.MySQL(b)
		} else {
			var err error
			db, err = store.Open(context.Background(), store.Options{DSN: filepath.Join(b.TempDir(), "drain.db")})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := db.Migrate(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		res, err := Drain(ctx, 1000, n, db, relay.Config{})
		cancel()
		db.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.Elapsed.Seconds(), "drain_s")
		b.ReportMetric(res.PerSecond, "msg/s")
		b.Logf("%s", res)
	}
}
