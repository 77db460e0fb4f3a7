package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"time"

	"github.com/phonebook/phonebook"
)

// Secret returns the named server secret, creating a random 32-byte one on
// first use. Every node sharing the store gets the same value.
func (d *DB) Secret(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := d.db.QueryRowContext(ctx, "SELECT value FROM secrets WHERE name = ?", name).Scan(&v)
	if err == nil {
		return v, nil
	}
	if err != sql.ErrNoRows {
		return nil, err
	}
	v = make([]byte, 32)
	if _, err := rand.Read(v); err != nil {
		return nil, err
	}
	_, err = d.db.ExecContext(ctx, "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)", name, v, us(now()))
	if err != nil && !isUniqueViolation(err) {
		return nil, err
	}
	// Another node may have won the race: read back whatever is stored.
	err = d.db.QueryRowContext(ctx, "SELECT value FROM secrets WHERE name = ?", name).Scan(&v)
	return v, err
}

// VerifyCode is a pending SMS-code verification (method A). There is one
// per (number, identity): the identity that started it is the only one
// that can check it, and another identity's start cannot replace it.
type VerifyCode struct {
	Number     phonebook.MSISDN
	DeviceID   string
	SIMID      string
	CodeMAC    []byte
	CreatedAt  time.Time
	ExpiresAt  time.Time
	Checks     int
	Sends      int
	NextSendAt time.Time
}

// VerifyCode returns the pending verification of the number for the
// identity, or ENotFound.
func (d *DB) VerifyCode(ctx context.Context, number phonebook.MSISDN, id phonebook.Identity) (*VerifyCode, error) {
	var v VerifyCode
	var created, expires, next int64
	err := d.db.QueryRowContext(ctx, `SELECT number, device_id, sim_id, code_mac, created_at, expires_at, checks, sends, next_send_at
		FROM verify_codes WHERE number = ? AND device_id = ? AND sim_id = ?`, number, id.DeviceID, id.SIMID).Scan(
		&v.Number, &v.DeviceID, &v.SIMID, &v.CodeMAC, &created, &expires, &v.Checks, &v.Sends, &next)
	if err != nil {
		return nil, formatError(err)
	}
	v.CreatedAt, v.ExpiresAt, v.NextSendAt = fromUS(created), fromUS(expires), fromUS(next)
	return &v, nil
}

// PutVerifyCode creates or replaces the pending verification of a number
// for an identity, in one statement (a delete then insert would take gap locks that deadlock
// concurrent starts on MySQL).
func (d *DB) PutVerifyCode(ctx context.Context, v VerifyCode) error {
	q := `INSERT INTO verify_codes (number, device_id, sim_id, code_mac, created_at, expires_at, checks, sends, next_send_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) `
	if d.dialect == MySQL {
		q += `ON DUPLICATE KEY UPDATE code_mac = VALUES(code_mac),
			created_at = VALUES(created_at), expires_at = VALUES(expires_at), checks = VALUES(checks), sends = VALUES(sends),
			next_send_at = VALUES(next_send_at)`
	} else {
		q += `ON CONFLICT(number, device_id, sim_id) DO UPDATE SET
			code_mac = excluded.code_mac, created_at = excluded.created_at, expires_at = excluded.expires_at,
			checks = excluded.checks, sends = excluded.sends, next_send_at = excluded.next_send_at`
	}
	return d.execRetry(ctx, q, v.Number, v.DeviceID, v.SIMID, v.CodeMAC, us(v.CreatedAt), us(v.ExpiresAt), v.Checks, v.Sends, us(v.NextSendAt))
}

// CountVerifyCheck atomically spends one check of the pending code of the
// number for the identity, as long as fewer than max were spent, and
// returns the record with this check counted. ok is false when no check
// was left.
func (d *DB) CountVerifyCheck(ctx context.Context, number phonebook.MSISDN, id phonebook.Identity, max int) (v *VerifyCode, ok bool, err error) {
	err = d.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE verify_codes SET checks = checks + 1 WHERE number = ? AND device_id = ? AND sim_id = ? AND checks < ?",
			number, id.DeviceID, id.SIMID, max)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		ok = n == 1
		var created, expires, next int64
		var r VerifyCode
		err = tx.QueryRowContext(ctx, `SELECT number, device_id, sim_id, code_mac, created_at, expires_at, checks, sends, next_send_at
			FROM verify_codes WHERE number = ? AND device_id = ? AND sim_id = ?`, number, id.DeviceID, id.SIMID).Scan(&r.Number, &r.DeviceID, &r.SIMID, &r.CodeMAC, &created, &expires, &r.Checks, &r.Sends, &next)
		if err != nil {
			return formatError(err)
		}
		r.CreatedAt, r.ExpiresAt, r.NextSendAt = fromUS(created), fromUS(expires), fromUS(next)
		v = &r
		return nil
	})
	return v, ok, err
}

// DeleteVerifyCode removes the pending code of the number for the identity
// (used, or abandoned); true when there was one.
func (d *DB) DeleteVerifyCode(ctx context.Context, number phonebook.MSISDN, id phonebook.Identity) (bool, error) {
	res, err := d.db.ExecContext(ctx, "DELETE FROM verify_codes WHERE number = ? AND device_id = ? AND sim_id = ?", number, id.DeviceID, id.SIMID)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// DeleteVerifyCodes removes every pending code of the number (it was just
// proven).
func (d *DB) DeleteVerifyCodes(ctx context.Context, number phonebook.MSISDN) error {
	_, err := d.db.ExecContext(ctx, "DELETE FROM verify_codes WHERE number = ?", number)
	return err
}

// VerifyToken is a method C token: the handset texts it to the short number.
type VerifyToken struct {
	ID        string
	TokenMAC  []byte
	PollHash  []byte
	DeviceID  string
	SIMID     string
	CreatedAt time.Time
	ExpiresAt time.Time
	State     string // pending, proven, claimed
	Number    phonebook.MSISDN
}

// Token states.
const (
	TokenPending = "pending"
	TokenProven  = "proven"
	TokenClaimed = "claimed"
)

// PutVerifyToken stores a new token.
func (d *DB) PutVerifyToken(ctx context.Context, t VerifyToken) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO verify_tokens (id, token_mac, poll_hash, device_id, sim_id, created_at, expires_at, state)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, t.ID, t.TokenMAC, t.PollHash, t.DeviceID, t.SIMID, us(t.CreatedAt), us(t.ExpiresAt), TokenPending)
	return formatError(err)
}

func scanToken(s scanner) (*VerifyToken, error) {
	var t VerifyToken
	var created, expires int64
	var number sql.NullString
	err := s.Scan(&t.ID, &t.TokenMAC, &t.PollHash, &t.DeviceID, &t.SIMID, &created, &expires, &t.State, &number)
	if err != nil {
		return nil, formatError(err)
	}
	t.CreatedAt, t.ExpiresAt, t.Number = fromUS(created), fromUS(expires), phonebook.MSISDN(number.String)
	return &t, nil
}

const tokenCols = "id, token_mac, poll_hash, device_id, sim_id, created_at, expires_at, state, number"

// VerifyToken returns the token by id, or ENotFound.
func (d *DB) VerifyToken(ctx context.Context, id string) (*VerifyToken, error) {
	return scanToken(d.db.QueryRowContext(ctx, "SELECT "+tokenCols+" FROM verify_tokens WHERE id = ?", id))
}

// ProveToken marks the pending, unexpired token with the MAC as proven for
// number. It reports false when there is no such token (unknown, used or
// expired), which makes a replayed MO harmless.
func (d *DB) ProveToken(ctx context.Context, mac []byte, number phonebook.MSISDN, at time.Time) (bool, error) {
	res, err := d.db.ExecContext(ctx, `UPDATE verify_tokens SET state = ?, number = ?
		WHERE token_mac = ? AND state = ? AND expires_at > ?`, TokenProven, number, mac, TokenPending, us(at))
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ClaimToken moves a proven token to claimed; only one caller ever succeeds.
func (d *DB) ClaimToken(ctx context.Context, id string) (bool, error) {
	res, err := d.db.ExecContext(ctx, "UPDATE verify_tokens SET state = ? WHERE id = ? AND state = ?", TokenClaimed, id, TokenProven)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// UnclaimToken moves a claimed token back to proven, after the proof it
// was claimed for failed, so that a later poll can try again.
func (d *DB) UnclaimToken(ctx context.Context, id string) error {
	_, err := d.db.ExecContext(ctx, "UPDATE verify_tokens SET state = ? WHERE id = ? AND state = ?", TokenProven, id, TokenClaimed)
	return err
}
