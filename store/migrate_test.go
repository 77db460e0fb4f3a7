package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/phonebook/phonebook"
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

// A store never migrated, or migrated by an older binary, is refused with
// a clear error saying what to run, and nothing is changed; once migrated
// it is accepted.
func TestCheckSchema(t *testing.T) {
	ctx := context.Background()
	behind := func(t *testing.T, db *store.DB, version int) {
		t.Helper()
		err := db.CheckSchema(ctx)
		want := fmt.Sprintf("the database schema is at version %d; ", version)
		if phonebook.ErrorCode(err) != phonebook.EUnavailable || !strings.HasPrefix(phonebook.ErrorMessage(err), want) ||
			!strings.HasSuffix(err.Error(), ": run `phonebook migrate`") {
			t.Fatalf("schema at %d: %v", version, err)
		}
	}
	fresh := map[string]func(t *testing.T) store.Options{
		"sqlite": func(t *testing.T) store.Options {
			return store.Options{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "pb.db")}
		},
		"mysql": func(t *testing.T) store.Options { return store.Options{Driver: "mysql", DSN: storetest.MySQLDSN(t)} },
	}
	for name, opts := range fresh {
		t.Run("never migrated/"+name, func(t *testing.T) {
			db, err := store.Open(ctx, opts(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			behind(t, db, 0)
			behind(t, db, 0) // checking created nothing
			if _, err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := db.CheckSchema(ctx); err != nil {
				t.Fatalf("after migrate: %v", err)
			}
		})
	}
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		if err := db.CheckSchema(ctx); err != nil {
			t.Fatalf("migrated: %v", err)
		}
		ms, _ := store.Migrations(db.Dialect())
		last := ms[len(ms)-1].Version
		if _, err := db.SQL().ExecContext(ctx, "DELETE FROM schema_migrations WHERE version = ?", last); err != nil {
			t.Fatal(err)
		}
		behind(t, db, ms[len(ms)-2].Version)
	})
}
