package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func TestMigrateTwiceAndConcurrently(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		// storetest already migrated once; a second run applies nothing.
		applied, err := db.Migrate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != 0 {
			t.Fatalf("second migrate applied %v", applied)
		}
		ms, _ := store.Migrations(db.Dialect())
		v, _ := db.Version(ctx)
		if v != ms[len(ms)-1].Version {
			t.Fatalf("version %d, want %d", v, ms[len(ms)-1].Version)
		}
	})
}

func TestMigrateFromTwoNodesAtOnce(t *testing.T) {
	dsn := storetest.MySQLDSN(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	total := make([]int, 4)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			db, err := store.Open(ctx, store.Options{Driver: "mysql", DSN: dsn})
			if err != nil {
				errs[i] = err
				return
			}
			defer db.Close()
			a, err := db.Migrate(ctx)
			errs[i], total[i] = err, len(a)
		}(i)
	}
	wg.Wait()
	sum := 0
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		sum += total[i]
	}
	ms, _ := store.Migrations(store.MySQL)
	if sum != len(ms) {
		t.Fatalf("migrations applied %d times in all, want %d (each once)", sum, len(ms))
	}
}
