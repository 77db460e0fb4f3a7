// Package storetest opens real, migrated, throw-away stores for tests: a
// SQLite file in the test's temporary directory, and a fresh MySQL/MariaDB
// database created for the test and dropped after it.
//
// The MySQL half runs when PHONEBOOK_TEST_MYSQL_DSN is set (scripts/test sets
// it). Without it the MySQL half is skipped, except under CI=true or
// PHONEBOOK_REQUIRE_MYSQL=1, where a missing database is a failure.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/phonebook/phonebook/store"
)

// EnvDSN names the variable holding the MySQL server DSN used by tests,
// e.g. "root@tcp(127.0.0.1:3306)/test".
const EnvDSN = "PHONEBOOK_TEST_MYSQL_DSN"

// SQLite returns a migrated store on a new file in t.TempDir().
func SQLite(t testing.TB) *store.DB {
	t.Helper()
	return open(t, store.Options{Driver: "sqlite", DSN: filepath.Join(t.TempDir(), "phonebook.db")})
}

// MySQLDSN creates a fresh database for the test and returns a DSN for it;
// the database is dropped when the test ends.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvDSN)
	if base == "" {
		if os.Getenv("CI") != "" || os.Getenv("PHONEBOOK_REQUIRE_MYSQL") == "1" {
			t.Fatalf("%s is not set: the MySQL store tests must run in CI (scripts/test sets it)", EnvDSN)
		}
		t.Skipf("%s not set; skipping MySQL half (scripts/test sets it)", EnvDSN)
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvDSN, err)
	}
	b := make([]byte, 6)
	rand.Read(b)
	name := "pbtest_" + hex.EncodeToString(b)
	admin, err := sql.Open("mysql", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name+" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		a, err := sql.Open("mysql", base)
		if err != nil {
			return
		}
		defer a.Close()
		a.Exec("DROP DATABASE IF EXISTS " + name)
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// MySQL returns a migrated store on a fresh MySQL database.
func MySQL(t testing.TB) *store.DB {
	t.Helper()
	return open(t, store.Options{Driver: "mysql", DSN: MySQLDSN(t)})
}

func open(t testing.TB, o store.Options) *store.DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db, err := store.Open(ctx, o)
	if err != nil {
		t.Fatalf("open %s store: %v", o.Driver, err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		t.Fatalf("migrate %s store: %v", o.Driver, err)
	}
	return db
}

// Each runs fn as a subtest against SQLite and against MySQL.
func Each(t *testing.T, fn func(t *testing.T, db *store.DB)) {
	t.Helper()
	for _, name := range []string{"sqlite", "mysql"} {
		t.Run(name, func(t *testing.T) {
			var db *store.DB
			if name == "sqlite" {
				db = SQLite(t)
			} else {
				db = MySQL(t)
			}
			fn(t, db)
		})
	}
}

// Name returns a short random suffix for unique test data.
func Name(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + strings.ToLower(hex.EncodeToString(b))
}
