package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/phonebook/phonebook"
)

// User is the patent's user record (unit 622).
type User struct {
	Number        phonebook.MSISDN
	DeviceID      string
	SIMID         string
	DeviceKeyHash []byte
	CreatedAt     time.Time
	UpdatedAt     time.Time
	Valid         bool // false: account blocked
	LastLogin     time.Time
	LoginCount    int64
	RescueHash    string // encoded password hash; "" when none is set
	SecureMode    bool
	ProvenBy      string // how the number was last proven: sms, mo, client, header, rescue
}

func us(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromUS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

const userCols = `number, device_id, sim_id, device_key_hash, created_at, updated_at, valid,
	last_login, login_count, rescue_hash, secure_mode, proven_by`

type scanner interface{ Scan(...any) error }

func scanUser(s scanner) (*User, error) {
	var u User
	var created, updated int64
	var last sql.NullInt64
	var rescue sql.NullString
	var valid, secure int
	err := s.Scan(&u.Number, &u.DeviceID, &u.SIMID, &u.DeviceKeyHash, &created, &updated, &valid,
		&last, &u.LoginCount, &rescue, &secure, &u.ProvenBy)
	if err != nil {
		return nil, formatError(err)
	}
	u.CreatedAt, u.UpdatedAt, u.LastLogin = fromUS(created), fromUS(updated), fromUS(last.Int64)
	u.RescueHash, u.Valid, u.SecureMode = rescue.String, valid == 1, secure == 1
	return &u, nil
}

// User returns the user with the number, or an ENotFound error.
func (d *DB) User(ctx context.Context, number phonebook.MSISDN) (*User, error) {
	row := d.db.QueryRowContext(ctx, "SELECT "+userCols+" FROM users WHERE number = ?", number)
	u, err := scanUser(row)
	if phonebook.ErrorCode(err) == phonebook.ENotFound {
		return nil, phonebook.Errorf(phonebook.ENotFound, "no user with number %s", number)
	}
	return u, err
}

// UserExists reports whether the number belongs to a registered user.
func (d *DB) UserExists(ctx context.Context, number phonebook.MSISDN) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM users WHERE number = ?", number).Scan(&n)
	return n > 0, err
}

// BindIdentity records that number is proven for identity: it creates the
// user when the number is unknown, or replaces the identity and device key of
// an existing user and revokes every session of the old identity (S110/S111).
// It reports whether the user was created.
func (d *DB) BindIdentity(ctx context.Context, number phonebook.MSISDN, id phonebook.Identity, keyHash []byte, provenBy string) (created bool, err error) {
	t := us(now())
	err = d.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET device_id = ?, sim_id = ?, device_key_hash = ?,
			updated_at = ?, proven_by = ? WHERE number = ?`, id.DeviceID, id.SIMID, keyHash, t, provenBy, number)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			_, err = tx.ExecContext(ctx, "UPDATE sessions SET revoked = 1 WHERE number = ? AND revoked = 0", number)
			return err
		}
		// MySQL reports 0 affected rows when the values are unchanged; only a
		// missing row means a new user.
		var exists int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM users WHERE number = ?", number).Scan(&exists); err != nil {
			return err
		}
		if exists > 0 {
			_, err = tx.ExecContext(ctx, "UPDATE sessions SET revoked = 1 WHERE number = ? AND revoked = 0", number)
			return err
		}
		created = true
		_, err = tx.ExecContext(ctx, `INSERT INTO users (number, device_id, sim_id, device_key_hash,
			created_at, updated_at, valid, login_count, secure_mode, proven_by)
			VALUES (?, ?, ?, ?, ?, ?, 1, 0, 0, ?)`, number, id.DeviceID, id.SIMID, keyHash, t, t, provenBy)
		return err
	})
	return created, formatError(err)
}

// Session is a login session; the token itself is never stored, only its
// SHA-256.
type Session struct {
	TokenHash []byte
	Number    phonebook.MSISDN
	DeviceID  string
	CreatedAt time.Time
	ExpiresAt time.Time
	Revoked   bool
}

// RecordLogin creates a session and updates the user's last login and login
// count, in one transaction.
func (d *DB) RecordLogin(ctx context.Context, s Session) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (token_hash, number, device_id, created_at, expires_at, revoked)
			VALUES (?, ?, ?, ?, ?, 0)`, s.TokenHash, s.Number, s.DeviceID, us(s.CreatedAt), us(s.ExpiresAt)); err != nil {
			return formatError(err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE users SET last_login = ?, login_count = login_count + 1 WHERE number = ?`,
			us(s.CreatedAt), s.Number)
		return err
	})
}

// Session returns the session with the token hash, or ENotFound.
func (d *DB) Session(ctx context.Context, tokenHash []byte) (*Session, error) {
	var s Session
	var created, expires int64
	var revoked int
	err := d.db.QueryRowContext(ctx, `SELECT token_hash, number, device_id, created_at, expires_at, revoked
		FROM sessions WHERE token_hash = ?`, tokenHash).Scan(&s.TokenHash, &s.Number, &s.DeviceID, &created, &expires, &revoked)
	if err != nil {
		return nil, formatError(err)
	}
	s.CreatedAt, s.ExpiresAt, s.Revoked = fromUS(created), fromUS(expires), revoked == 1
	return &s, nil
}

// RevokeSession revokes one session.
func (d *DB) RevokeSession(ctx context.Context, tokenHash []byte) error {
	_, err := d.db.ExecContext(ctx, "UPDATE sessions SET revoked = 1 WHERE token_hash = ?", tokenHash)
	return err
}

// RevokeSessions revokes every session of the number and returns how many.
func (d *DB) RevokeSessions(ctx context.Context, number phonebook.MSISDN) (int64, error) {
	res, err := d.db.ExecContext(ctx, "UPDATE sessions SET revoked = 1 WHERE number = ? AND revoked = 0", number)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// DeleteExpiredSessions removes sessions that expired before t.
func (d *DB) DeleteExpiredSessions(ctx context.Context, t time.Time) (int64, error) {
	res, err := d.db.ExecContext(ctx, "DELETE FROM sessions WHERE expires_at < ?", us(t))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// SetValid blocks (false) or unblocks (true) a user.
func (d *DB) SetValid(ctx context.Context, number phonebook.MSISDN, valid bool) error {
	v := 0
	if valid {
		v = 1
	}
	return d.updateUser(ctx, number, "valid = ?", v)
}

// SetRescue sets the rescue password hash ("" clears it) and the secure
// login mode.
func (d *DB) SetRescue(ctx context.Context, number phonebook.MSISDN, hash string, secure bool) error {
	s := 0
	if secure {
		s = 1
	}
	var h any = hash
	if hash == "" {
		h = nil
	}
	return d.updateUser(ctx, number, "rescue_hash = ?, secure_mode = ?", h, s)
}

func (d *DB) updateUser(ctx context.Context, number phonebook.MSISDN, set string, args ...any) error {
	args = append(args, us(now()), number)
	res, err := d.db.ExecContext(ctx, "UPDATE users SET "+set+", updated_at = ? WHERE number = ?", args...)
	if err != nil {
		return formatError(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return phonebook.Errorf(phonebook.ENotFound, "no user with number %s", number)
	}
	return nil
}

// DeleteUser removes the user and their sessions.
func (d *DB) DeleteUser(ctx context.Context, number phonebook.MSISDN) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE number = ?", number); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, "DELETE FROM users WHERE number = ?", number)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return phonebook.Errorf(phonebook.ENotFound, "no user with number %s", number)
		}
		return nil
	})
}

// Hit counts one event against a fixed-window counter and returns the count
// in the current window (this event included) and when the window ends. The
// counter lives in the store, so a limit holds across every node that shares
// it.
func (d *DB) Hit(ctx context.Context, name string, window time.Duration) (count int64, resetAt time.Time, err error) {
	return d.add(ctx, name, window, 1)
}

// Count returns the current window's count without adding to it.
func (d *DB) Count(ctx context.Context, name string, window time.Duration) (int64, time.Time, error) {
	var c, start int64
	err := d.db.QueryRowContext(ctx, "SELECT count, window_start FROM counters WHERE name = ?", name).Scan(&c, &start)
	if err == sql.ErrNoRows {
		return 0, time.Time{}, nil
	}
	if err != nil {
		return 0, time.Time{}, err
	}
	if fromUS(start).Add(window).Before(now()) {
		return 0, time.Time{}, nil
	}
	return c, fromUS(start).Add(window), nil
}

// ResetCounter clears a counter (e.g. failures after a success).
func (d *DB) ResetCounter(ctx context.Context, name string) error {
	_, err := d.db.ExecContext(ctx, "DELETE FROM counters WHERE name = ?", name)
	return err
}

func (d *DB) add(ctx context.Context, name string, window time.Duration, n int64) (int64, time.Time, error) {
	t := us(now())
	cutoff := t - window.Microseconds()
	var q string
	if d.dialect == MySQL {
		// Assignments run left to right: count reads the old window_start.
		q = `INSERT INTO counters (name, window_start, count) VALUES (?, ?, ?)
			ON DUPLICATE KEY UPDATE count = IF(window_start <= ?, VALUES(count), count + VALUES(count)),
			window_start = IF(window_start <= ?, VALUES(window_start), window_start)`
	} else {
		q = `INSERT INTO counters (name, window_start, count) VALUES (?, ?, ?)
			ON CONFLICT(name) DO UPDATE SET
			count = CASE WHEN window_start <= ? THEN excluded.count ELSE count + excluded.count END,
			window_start = CASE WHEN window_start <= ? THEN excluded.window_start ELSE window_start END`
	}
	var count, start int64
	err := d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, q, name, t, n, cutoff, cutoff); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, "SELECT count, window_start FROM counters WHERE name = ?", name).Scan(&count, &start)
	})
	if err != nil {
		return 0, time.Time{}, err
	}
	return count, fromUS(start).Add(window), nil
}
