package store

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/phonebook/phonebook"
)

//go:embed migrations
var migrationFS embed.FS

// Migration is one versioned schema step. Files are named
// NNNN_name.sql under migrations/<dialect>/; statements are separated by a
// line holding only ";".
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations for the dialect, in order.
func Migrations(d Dialect) ([]Migration, error) {
	dir := path.Join("migrations", string(d))
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, err
	}
	var ms []Migration
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("store: migration file %s: want NNNN_name.sql", name)
		}
		b, err := fs.ReadFile(migrationFS, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		ms = append(ms, Migration{Version: v, Name: rest, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	for i := 1; i < len(ms); i++ {
		if ms[i].Version == ms[i-1].Version {
			return nil, fmt.Errorf("store: two migrations with version %d", ms[i].Version)
		}
	}
	return ms, nil
}

func statements(s string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) == ";" {
			if q := strings.TrimSpace(cur.String()); q != "" {
				out = append(out, q)
			}
			cur.Reset()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	if q := strings.TrimSpace(cur.String()); q != "" {
		out = append(out, q)
	}
	return out
}

// Migrate applies every embedded migration not yet applied and returns the
// versions it applied. It is safe to run twice and from several nodes at
// once: MySQL serialises runners with a named lock, SQLite with its write
// lock.
func (d *DB) Migrate(ctx context.Context) ([]int, error) {
	ms, err := Migrations(d.dialect)
	if err != nil {
		return nil, err
	}
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()

	if d.dialect == MySQL {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('phonebook_migrate', 60)").Scan(&got); err != nil {
			return nil, fmt.Errorf("store: migrate: lock: %w", err)
		}
		if !got.Valid || got.Int64 != 1 {
			return nil, fmt.Errorf("store: migrate: another node held the migration lock for 60s")
		}
		defer conn.ExecContext(context.Background(), "SELECT RELEASE_LOCK('phonebook_migrate')")
	}
	create := `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER NOT NULL PRIMARY KEY,
		name VARCHAR(200) NOT NULL,
		applied_at VARCHAR(40) NOT NULL)`
	if _, err := conn.ExecContext(ctx, create); err != nil {
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	var applied []int
	for _, m := range ms {
		ok, err := d.applyOne(ctx, conn, m)
		if err != nil {
			return applied, fmt.Errorf("store: migration %04d_%s: %w", m.Version, m.Name, err)
		}
		if ok {
			applied = append(applied, m.Version)
		}
	}
	return applied, nil
}

func (d *DB) applyOne(ctx context.Context, conn *sql.Conn, m Migration) (bool, error) {
	// SQLite: DDL is transactional and BEGIN IMMEDIATE serialises runners.
	// MySQL: DDL commits implicitly; the named lock serialises runners.
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE version = ?", m.Version).Scan(&n); err != nil {
		return false, err
	}
	if n > 0 {
		return false, nil
	}
	for _, q := range statements(m.SQL) {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return false, fmt.Errorf("%w\n%s", err, q)
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
		m.Version, m.Name, now().Format("2006-01-02T15:04:05.000000Z")); err != nil {
		return false, err
	}
	return true, tx.Commit()
}

// Version returns the highest applied migration, 0 for an empty database.
func (d *DB) Version(ctx context.Context) (int, error) {
	var v sql.NullInt64
	err := d.db.QueryRowContext(ctx, "SELECT MAX(version) FROM schema_migrations").Scan(&v)
	if err != nil {
		return 0, nil
	}
	return int(v.Int64), nil
}

// CheckSchema reports, without changing anything, whether every migration
// embedded in this binary has been applied: nil if so; otherwise an error
// (code unavailable) saying to run `phonebook migrate`. Commands that work
// on a store without serving (admin) call it instead of Migrate, so that
// only `migrate` and `serve` change the schema.
func (d *DB) CheckSchema(ctx context.Context) error {
	ms, err := Migrations(d.dialect)
	if err != nil {
		return err
	}
	applied := map[int]bool{}
	rows, err := d.db.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err == nil {
		for rows.Next() {
			var v int
			if err := rows.Scan(&v); err != nil {
				rows.Close()
				return fmt.Errorf("store: schema version: %w", err)
			}
			applied[v] = true
		}
		err = rows.Err()
		rows.Close()
	}
	if err != nil && d.Ping(ctx) != nil {
		return fmt.Errorf("store: schema version: %w", err)
	}
	// With the database reachable, a failed query means no
	// schema_migrations table: nothing was ever migrated.
	missing := false
	for _, m := range ms {
		missing = missing || !applied[m.Version]
	}
	if !missing {
		return nil
	}
	have := 0
	for v := range applied {
		have = max(have, v)
	}
	return phonebook.Errorf(phonebook.EUnavailable,
		"the database schema is at version %d; this phonebook needs %d: run `phonebook migrate`", have, ms[len(ms)-1].Version)
}
