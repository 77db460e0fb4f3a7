package store

// This file holds SQL helpers shared across the store: chunked IN lists,
// multi-row inserts, number queries and the deadlock-retrying transaction.

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/phonebook/phonebook"
)

// chunk bounds the values of one IN (...) list, and insertArgs the
// placeholders of one multi-row INSERT, so a large book never builds a
// statement either engine refuses (SQLite allows 32766 placeholders, MySQL
// prepared statements 65535) while a 1,000-entry book takes few round trips.
const (
	chunk      = 1000
	insertArgs = 6000
)

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func queryNumbers(ctx context.Context, q querier, query string, args ...any) ([]phonebook.MSISDN, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []phonebook.MSISDN
	for rows.Next() {
		var n phonebook.MSISDN
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func insertRows(ctx context.Context, tx *sql.Tx, table string, rows [][]any) error {
	if len(rows) == 0 {
		return nil
	}
	width := len(rows[0])
	one := "(" + placeholders(width) + ")"
	per := insertArgs / width
	for start := 0; start < len(rows); start += per {
		end := min(start+per, len(rows))
		vals := make([]string, 0, end-start)
		args := make([]any, 0, (end-start)*width)
		for _, r := range rows[start:end] {
			vals = append(vals, one)
			args = append(args, r...)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+table+" VALUES "+strings.Join(vals, ","), args...); err != nil {
			return err
		}
	}
	return nil
}

func chunks[T any](xs []T) [][]T {
	var out [][]T
	for start := 0; start < len(xs); start += chunk {
		out = append(out, xs[start:min(start+chunk, len(xs))])
	}
	return out
}

func anys[T any](xs []T) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

// retryTx runs fn in a transaction and runs it again when MySQL picked it as
// a deadlock victim, which concurrent syncs touching each other's rows can
// cause. MySQL runs it at READ COMMITTED so that reads of absent rows take no
// gap locks.
func (d *DB) retryTx(ctx context.Context, fn func(*sql.Tx) error) error {
	var opts *sql.TxOptions
	if d.dialect == MySQL {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	for attempt := 0; ; attempt++ {
		err := func() error {
			tx, err := d.db.BeginTx(ctx, opts)
			if err != nil {
				return err
			}
			if err := fn(tx); err != nil {
				tx.Rollback()
				return err
			}
			return tx.Commit()
		}()
		if err == nil || attempt >= 4 || !isDeadlock(err) {
			return formatError(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}

func isDeadlock(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == 1213
}
