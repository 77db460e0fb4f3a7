// Package store is Phonebook's persistence: one schema, two engines. SQLite
// (pure Go, a file under ./data/) is the embedded default; MySQL 8 and
// MariaDB 10.11 serve production and clusters. It is the only package that
// imports SQL drivers, and it maps driver errors to phonebook error codes once.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite" // registers "sqlite"

	"github.com/phonebook/phonebook"
)

// Dialect names the SQL engine behind a DB.
type Dialect string

const (
	SQLite Dialect = "sqlite"
	MySQL  Dialect = "mysql"
)

// DB is the store. Its methods are safe for concurrent use.
type DB struct {
	db      *sql.DB
	dialect Dialect
}

// DefaultMaxOpenConns is the MySQL connection pool's size unless configured.
const DefaultMaxOpenConns = 64

// Options configures Open. Zero values mean defaults.
type Options struct {
	Driver       string // "sqlite" (default) or "mysql"
	DSN          string // sqlite: file path; mysql: go-sql-driver DSN
	MaxOpenConns int    // mysql only; default DefaultMaxOpenConns
}

// DefaultSQLitePath is where the embedded default keeps its data.
const DefaultSQLitePath = "data/phonebook.db"

// Open connects to the database and checks that it answers. It does not
// migrate; call Migrate.
func Open(ctx context.Context, o Options) (*DB, error) {
	switch o.Driver {
	case "", string(SQLite):
		return openSQLite(ctx, o)
	case string(MySQL):
		return openMySQL(ctx, o)
	default:
		return nil, fmt.Errorf("store: unknown driver %q (want sqlite or mysql)", o.Driver)
	}
}

func openSQLite(ctx context.Context, o Options) (*DB, error) {
	path := o.DSN
	if path == "" {
		path = DefaultSQLitePath
	}
	if path != ":memory:" && !strings.HasPrefix(path, "file:") {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("store: create directory for %s: %w", path, err)
		}
	}
	dsn := path
	if !strings.Contains(dsn, "?") {
		dsn += "?"
	} else {
		dsn += "&"
	}
	// WAL lets readers run beside the writer; busy_timeout makes writers queue
	// instead of failing; synchronous(NORMAL) in WAL mode survives a process
	// crash (SIGKILL) and loses at most the last commits on power loss.
	// _txlock=immediate takes the write lock at BEGIN, so transactions that
	// read then write cannot deadlock into SQLITE_BUSY. wal_autocheckpoint
	// is 16,384 pages (64 MiB) instead of 1,000: the relay's batches of chat
	// records dirty the same index pages again and again, and a checkpoint
	// copies each page once however often it was written, so checkpointing
	// less often took the relay's closed-loop rate from about 58,000 to
	// 63,000 msg/s (docs/benchmarks.md).
	dsn += "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(ON)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(16384)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	// One writer at a time is SQLite's rule; a small pool keeps readers
	// concurrent while writes queue on busy_timeout.
	db.SetMaxOpenConns(8)
	db.SetConnMaxIdleTime(time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open sqlite %s: %w", path, err)
	}
	return &DB{db: db, dialect: SQLite}, nil
}

func openMySQL(ctx context.Context, o Options) (*DB, error) {
	cfg, err := mysql.ParseDSN(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("store: mysql dsn: %w", err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.MultiStatements = false
	// Client-side interpolation: one round trip per query instead of three
	// (prepare, execute, close). Safe: the connection charset is utf8mb4,
	// for which the driver escapes correctly, and it refuses otherwise.
	cfg.InterpolateParams = true
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	if cfg.Collation == "" {
		cfg.Collation = "utf8mb4_bin"
	}
	// READ COMMITTED: no gap locks, so concurrent upserts of rows that do
	// not exist yet cannot deadlock each other. MariaDB and MySQL 8 name the
	// session variable differently; ask the server which it is.
	probe, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: mysql: %w", err)
	}
	pdb := sql.OpenDB(probe)
	var ver string
	err = pdb.QueryRowContext(ctx, "SELECT VERSION()").Scan(&ver)
	pdb.Close()
	if err != nil {
		return nil, fmt.Errorf("store: connect mysql %s@%s/%s: %w", cfg.User, cfg.Addr, cfg.DBName, err)
	}
	if strings.Contains(strings.ToLower(ver), "mariadb") {
		cfg.Params["tx_isolation"] = "'READ-COMMITTED'"
	} else {
		cfg.Params["transaction_isolation"] = "'READ-COMMITTED'"
	}
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("store: mysql: %w", err)
	}
	db := sql.OpenDB(connector)
	n := o.MaxOpenConns
	if n <= 0 {
		n = DefaultMaxOpenConns
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(30 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect mysql %s@%s/%s: %w", cfg.User, cfg.Addr, cfg.DBName, err)
	}
	return &DB{db: db, dialect: MySQL}, nil
}

// Dialect reports the engine.
func (d *DB) Dialect() Dialect { return d.dialect }

// SQL exposes the handle for tests and tools that need raw access.
func (d *DB) SQL() *sql.DB { return d.db }

// Ping checks that the database answers; /readyz uses it.
func (d *DB) Ping(ctx context.Context) error { return d.db.PingContext(ctx) }

// Close closes the pool.
func (d *DB) Close() error { return d.db.Close() }

// tx runs fn in a transaction, committing when it returns nil. A deadlock
// or lock-wait timeout (MySQL) runs the whole transaction again, so fn must
// not have effects outside it.
func (d *DB) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	return d.txWith(ctx, nil, fn)
}

func (d *DB) txWith(ctx context.Context, opts *sql.TxOptions, fn func(*sql.Tx) error) error {
	for attempt := 0; ; attempt++ {
		tx, err := d.db.BeginTx(ctx, opts)
		if err != nil {
			return formatError(err)
		}
		err = fn(tx)
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
		if err != nil && attempt < 8 && retryable(err) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
			}
			continue
		}
		return formatError(err)
	}
}

// execRetry runs one statement, again after a deadlock or lock-wait timeout.
func (d *DB) execRetry(ctx context.Context, q string, args ...any) error {
	for attempt := 0; ; attempt++ {
		_, err := d.db.ExecContext(ctx, q, args...)
		if err != nil && attempt < 8 && retryable(err) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
			}
			continue
		}
		return formatError(err)
	}
}

func retryable(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1213 || me.Number == 1205)
}

// formatError maps driver errors to phonebook codes: unique violations become
// EConflict, no rows ENotFound; everything else passes through wrapped.
func formatError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return phonebook.Errorf(phonebook.ENotFound, "not found")
	}
	if isUniqueViolation(err) {
		return phonebook.Errorf(phonebook.EConflict, "already exists")
	}
	return err
}

func isUniqueViolation(err error) bool {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number == 1062
	}
	return strings.Contains(err.Error(), "UNIQUE constraint failed") ||
		strings.Contains(err.Error(), "PRIMARY KEY constraint")
}

// now is the store's clock, in UTC with microsecond precision, which both
// engines keep exactly.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }
