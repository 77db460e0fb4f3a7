package contacts_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// eachStore runs a benchmark on SQLite and, when PHONEBOOK_TEST_MYSQL_DSN is
// set, on MySQL/MariaDB.
func eachStore(b *testing.B, fn func(b *testing.B, db *store.DB)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, storetest.SQLite(b)) })
	b.Run("mysql", func(b *testing.B) {
		if os.Getenv(storetest.EnvDSN) == "" {
			b.Skip(storetest.EnvDSN + " not set")
		}
		fn(b, storetest.MySQL(b))
	})
}

func percentiles(b *testing.B, ds []time.Duration) {
	slices.Sort(ds)
	at := func(p float64) float64 {
		return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op") // the percentiles say more than the mean
}

// seedMillion registers users +8613900000000 .. +8613900999999.
func seedMillion(b *testing.B, db *store.DB) {
	const users, per = 1_000_000, 50_000
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, users/per)
	sem := make(chan struct{}, 2)
	for base := 0; base < users; base += per {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ns := make([]phonebook.MSISDN, per)
			for i := range ns {
				ns[i] = phonebook.MSISDN(fmt.Sprintf("+86139%08d", base+i))
			}
			errs <- storetest.SeedUsers(context.Background(), db, ns...)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("seeded %d users in %v", users, time.Since(start).Round(time.Millisecond))
}

// thousandCards is a phone book of 1,000 entries as people write numbers:
// half registered users, half not, in national format with spaces.
func thousandCards(r *rand.Rand) []contacts.Entry {
	es := make([]contacts.Entry, 1000)
	for i := range es {
		n := r.IntN(1_000_000)
		num := fmt.Sprintf("139 %04d %04d", n/10000, n%10000)
		if i%2 == 1 {
			num = fmt.Sprintf("137 %04d %04d", n/10000, n%10000)
		}
		es[i] = contacts.Entry{ID: fmt.Sprintf("e%04d", i), Name: fmt.Sprintf("Contact %d", i), Phones: []contacts.Phone{{Number: num, Label: "mobile"}}}
	}
	return es
}

// BenchmarkSyncFirst1000 is a new user's first full upload of a 1,000-entry
// book against 1,000,000 registered users: normalise, store the book, derive
// the contact rows and flags, charge the budget, match. Run with
// -benchtime=200x for a meaningful p99.
func BenchmarkSyncFirst1000(b *testing.B) {
	eachStore(b, func(b *testing.B, db *store.DB) {
		seedMillion(b, db)
		svc, err := contacts.New(db, nil, contacts.Config{}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer svc.Close(context.Background())
		r := rand.New(rand.NewPCG(1, 2))
		var ds []time.Duration
		owner := 0
		for b.Loop() {
			req := contacts.SyncRequest{Full: true, Entries: thousandCards(r)}
			me := phonebook.MSISDN(fmt.Sprintf("+86135%08d", owner))
			owner++
			t0 := time.Now()
			res, err := svc.Sync(context.Background(), me, "", req)
			ds = append(ds, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
			if res.Contacts < 900 {
				b.Fatalf("only %d contacts", res.Contacts)
			}
		}
		percentiles(b, ds)
	})
}

// BenchmarkSyncUnchanged1000 is the common case: a phone re-uploads its
// unchanged 1,000-entry book (login, periodic refresh) and gets every
// entry's match and presence back.
func BenchmarkSyncUnchanged1000(b *testing.B) {
	eachStore(b, func(b *testing.B, db *store.DB) {
		seedMillion(b, db)
		svc, err := contacts.New(db, nil, contacts.Config{}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer svc.Close(context.Background())
		req := contacts.SyncRequest{Full: true, Entries: thousandCards(rand.New(rand.NewPCG(3, 4)))}
		const me = phonebook.MSISDN("+8613500000001")
		if _, err := svc.Sync(context.Background(), me, "", req); err != nil {
			b.Fatal(err)
		}
		var ds []time.Duration
		for b.Loop() {
			t0 := time.Now()
			_, err := svc.Sync(context.Background(), me, "", req)
			ds = append(ds, time.Since(t0))
			if err != nil {
				b.Fatal(err)
			}
		}
		percentiles(b, ds)
	})
}

// arrivals is a Notifier that notes when each recipient's copy arrives and
// signals when the expected number has.
type arrivals struct {
	mu   sync.Mutex
	last time.Time
	n    int
	want int
	done chan struct{}
}

func (a *arrivals) Notify(_ context.Context, to []phonebook.MSISDN, _ contacts.Event) error {
	for range to {
		now := time.Now()
		a.mu.Lock()
		a.n++
		a.last = now
		if a.n == a.want {
			close(a.done)
		}
		a.mu.Unlock()
	}
	return nil
}

func (a *arrivals) expect(n int) {
	a.mu.Lock()
	a.n, a.want, a.done = 0, n, make(chan struct{})
	a.mu.Unlock()
}

// BenchmarkPresenceFanout1000 changes the status of a user who has 1,000
// online mutual contacts and measures until the last contact's copy reaches
// the notifier.
func BenchmarkPresenceFanout1000(b *testing.B) {
	eachStore(b, func(b *testing.B, db *store.DB) {
		ctx := context.Background()
		const subject = phonebook.MSISDN("+8613500000000")
		var rows, status []string
		var args, sargs []any
		for i := range 1000 {
			c := fmt.Sprintf("+86136%08d", i)
			rows = append(rows, "(?, ?, 'x', '', 1, 1, 2)", "(?, ?, 'x', '', 1, 1, 2)")
			args = append(args, string(subject), c, c, string(subject))
			status = append(status, "(?, 'online', 1)")
			sargs = append(sargs, c)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO contacts (owner, contact, name, group_name, created_at, updated_at, flag) VALUES " + strings.Join(rows, ","), args},
			{"INSERT INTO user_status (number, im_status, updated_at) VALUES " + strings.Join(status, ","), sargs},
		} {
			if _, err := db.SQL().ExecContext(ctx, q.sql, q.args...); err != nil {
				b.Fatal(err)
			}
		}
		rec := &arrivals{}
		svc, err := contacts.New(db, rec, contacts.Config{}, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer svc.Close(ctx)
		var ds []time.Duration
		i := 0
		for b.Loop() {
			i++
			text := fmt.Sprintf("status %d", i)
			rec.expect(1000)
			t0 := time.Now()
			if _, err := svc.SetPresence(ctx, subject, contacts.PresenceUpdate{StatusText: &text}); err != nil {
				b.Fatal(err)
			}
			select {
			case <-rec.done:
			case <-time.After(10 * time.Second):
				b.Fatal("fan-out did not reach 1000 contacts")
			}
			rec.mu.Lock()
			ds = append(ds, rec.last.Sub(t0))
			rec.mu.Unlock()
		}
		percentiles(b, ds)
	})
}
