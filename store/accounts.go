package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"strings"
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
//
// Operators give a number that has been given up to a new subscriber after
// a quarantine. When recycleBefore is set, a user whose SIM differs from the
// one proven now and who has not logged in (or been proven) since
// recycleBefore is taken to be the previous subscriber: the account starts
// again as a new one (created and recycled are both true) and what the
// previous subscriber left is deleted (as ForgetContacts does), so the newcomer can
// neither restore their address book nor log in with their rescue password.
// A blocked account stays blocked; callers refuse it before this.
func (d *DB) BindIdentity(ctx context.Context, number phonebook.MSISDN, id phonebook.Identity, keyHash []byte, provenBy string, recycleBefore time.Time) (created, recycled bool, err error) {
	t := us(now())
	err = d.tx(ctx, func(tx *sql.Tx) error {
		created, recycled = false, false
		var simID string
		var lastActive int64
		err := tx.QueryRowContext(ctx, "SELECT sim_id, COALESCE(last_login, updated_at) FROM users WHERE number = ?"+d.forUpdate(),
			number).Scan(&simID, &lastActive)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created = true
			_, err = tx.ExecContext(ctx, `INSERT INTO users (number, device_id, sim_id, device_key_hash,
				created_at, updated_at, valid, login_count, secure_mode, proven_by)
				VALUES (?, ?, ?, ?, ?, ?, 1, 0, 0, ?)`, number, id.DeviceID, id.SIMID, keyHash, t, t, provenBy)
			return err
		case err != nil:
			return err
		}
		if !recycleBefore.IsZero() && simID != "" && simID != id.SIMID && lastActive < us(recycleBefore) {
			created, recycled = true, true
			if err := forgetContacts(ctx, tx, number); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, "DELETE FROM sessions WHERE number = ?", number); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, `UPDATE users SET device_id = ?, sim_id = ?, device_key_hash = ?,
				created_at = ?, updated_at = ?, last_login = NULL, login_count = 0, rescue_hash = NULL,
				secure_mode = 0, proven_by = ? WHERE number = ?`, id.DeviceID, id.SIMID, keyHash, t, t, provenBy, number)
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET device_id = ?, sim_id = ?, device_key_hash = ?,
			updated_at = ?, proven_by = ? WHERE number = ?`, id.DeviceID, id.SIMID, keyHash, t, provenBy, number); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE sessions SET revoked = 1 WHERE number = ? AND revoked = 0", number)
		return err
	})
	return created, recycled, formatError(err)
}

// Session is a login session; the token itself is never stored, only its
// SHA-256.
type Session struct {
	TokenHash []byte
	UDPID     []byte // phonebook.UDPTokenID(TokenHash): how a UDP login names it
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (token_hash, udp_id, number, device_id, created_at, expires_at, revoked)
			VALUES (?, ?, ?, ?, ?, ?, 0)`, s.TokenHash, s.UDPID, s.Number, s.DeviceID, us(s.CreatedAt), us(s.ExpiresAt)); err != nil {
			return formatError(err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE users SET last_login = ?, login_count = login_count + 1 WHERE number = ?`,
			us(s.CreatedAt), s.Number)
		return err
	})
}

// Session returns the session with the token hash, or ENotFound.
func (d *DB) Session(ctx context.Context, tokenHash []byte) (*Session, error) {
	return d.session(ctx, "token_hash", tokenHash)
}

// SessionByUDPID returns the session a UDP login names, or ENotFound.
func (d *DB) SessionByUDPID(ctx context.Context, udpID []byte) (*Session, error) {
	if len(udpID) == 0 {
		return nil, phonebook.Errorf(phonebook.ENotFound, "not found")
	}
	return d.session(ctx, "udp_id", udpID)
}

func (d *DB) session(ctx context.Context, col string, key []byte) (*Session, error) {
	var s Session
	var created, expires int64
	var revoked int
	err := d.db.QueryRowContext(ctx, `SELECT token_hash, udp_id, number, device_id, created_at, expires_at, revoked
		FROM sessions WHERE `+col+` = ?`, key).Scan(&s.TokenHash, &s.UDPID, &s.Number, &s.DeviceID, &created, &expires, &revoked)
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

// DeleteUser removes the user, their sessions, and, in the same
// transaction, their address book, contact list and status (as
// ForgetContacts does), so that whoever gets the number next cannot
// restore them.
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
		return forgetContacts(ctx, tx, number)
	})
}

// ValidSessions returns which of the token hashes are sessions still valid
// at t: not revoked, not expired, and their user not blocked. The relay
// checks its live connections with it (one query per few hundred).
func (d *DB) ValidSessions(ctx context.Context, hashes [][]byte, t time.Time) (map[string]bool, error) {
	valid := make(map[string]bool, len(hashes))
	for _, part := range chunks(hashes) {
		rows, err := d.db.QueryContext(ctx, `SELECT s.token_hash FROM sessions s JOIN users u ON u.number = s.number
			WHERE s.token_hash IN (`+placeholders(len(part))+`) AND s.revoked = 0 AND s.expires_at > ? AND u.valid = 1`,
			append(anys(part), us(t))...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var h []byte
			if err := rows.Scan(&h); err != nil {
				rows.Close()
				return nil, err
			}
			valid[string(h)] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return valid, nil
}

// Counters are fixed windows aligned to the epoch (a 24-hour window is a
// UTC day). Each is spread over counterShards rows so that a hot counter
// (one client address, one number prefix) does not serialise every caller
// on one row lock: an increment touches one random shard in a single
// statement, and a read sums the shards without locking. They live in the
// store, so a limit holds across every node that shares it.
const counterShards = 16

// CounterHit is one increment for Hits.
type CounterHit struct {
	Name   string
	Window time.Duration
}

// Hit counts one event and returns the count in the current window (this
// event included) and when the window ends.
func (d *DB) Hit(ctx context.Context, name string, window time.Duration) (count int64, resetAt time.Time, err error) {
	counts, resets, err := d.Hits(ctx, []CounterHit{{name, window}})
	if err != nil {
		return 0, time.Time{}, err
	}
	return counts[0], resets[0], nil
}

// Hits counts one event on each counter, in one write and one read.
//
// Counting first and deciding after is what makes a limit hold under
// concurrency: each caller's read follows its own increment, so of the
// callers that see a count of at most limit there are at most limit (the
// last of them to increment sees all of them). Check-then-count (Count,
// then Hit after the work) lets every concurrent caller through.
func (d *DB) Hits(ctx context.Context, hits []CounterHit) (counts []int64, resets []time.Time, err error) {
	counts, resets, _, err = d.hits(ctx, hits)
	return counts, resets, err
}

// Reservation is one event counted by Reserve, which Release can take back.
type Reservation struct {
	Count   int64     // the counter's value with this event, as Hit returns it
	ResetAt time.Time // end of the window
	shard   string
	start   int64
}

// Reserve counts one attempt before the work it guards is done, like Hit,
// and remembers where, so that Release can give it back when the attempt
// turns out not to count (a right password, a successful login).
func (d *DB) Reserve(ctx context.Context, name string, window time.Duration) (Reservation, error) {
	counts, resets, shards, err := d.hits(ctx, []CounterHit{{name, window}})
	if err != nil {
		return Reservation{}, err
	}
	return Reservation{Count: counts[0], ResetAt: resets[0], shard: shards[0], start: us(resets[0].Add(-window))}, nil
}

// Release takes back a reservation. In a window that has ended since, it
// does nothing.
func (d *DB) Release(ctx context.Context, r Reservation) error {
	if r.shard == "" {
		return nil
	}
	return d.execRetry(ctx, "UPDATE counters SET count = count - 1 WHERE name = ? AND window_start = ? AND count > 0", r.shard, r.start)
}

func (d *DB) hits(ctx context.Context, hits []CounterHit) (counts []int64, resets []time.Time, shards []string, err error) {
	t := now()
	// Rows are written in name order so that concurrent multi-row upserts
	// take their row locks in one order and cannot deadlock each other.
	order := make([]int, len(hits))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return hits[order[a]].Name < hits[order[b]].Name })
	var b strings.Builder
	args := make([]any, 0, 3*len(hits))
	b.WriteString("INSERT INTO counters (name, window_start, count) VALUES ")
	starts := make([]int64, len(hits))
	shards = make([]string, len(hits))
	for k, i := range order {
		h := hits[i]
		if k > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, 1)")
		starts[i] = us(t.Truncate(h.Window))
		shards[i] = fmt.Sprintf("%s#%d", h.Name, mrand.IntN(counterShards))
		args = append(args, shards[i], starts[i])
	}
	if d.dialect == MySQL {
		// window_start is assigned after count, so count still sees the old one.
		b.WriteString(` ON DUPLICATE KEY UPDATE count = IF(window_start = VALUES(window_start), count + 1, 1),
			window_start = VALUES(window_start)`)
	} else {
		b.WriteString(` ON CONFLICT(name) DO UPDATE SET
			count = CASE WHEN window_start = excluded.window_start THEN count + 1 ELSE 1 END,
			window_start = excluded.window_start`)
	}
	if err := d.execRetry(ctx, b.String(), args...); err != nil {
		return nil, nil, nil, err
	}
	// One read for every counter's shards.
	names := make([]any, 0, counterShards*len(hits))
	for _, h := range hits {
		names = append(names, shardNames(h.Name)...)
	}
	rows, err := d.db.QueryContext(ctx, "SELECT name, window_start, count FROM counters WHERE name IN ("+
		strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ")+")", names...)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	type key struct {
		name  string
		start int64
	}
	sums := map[key]int64{}
	for rows.Next() {
		var name string
		var start, c int64
		if err := rows.Scan(&name, &start, &c); err != nil {
			return nil, nil, nil, err
		}
		if i := strings.LastIndexByte(name, '#'); i >= 0 {
			sums[key{name[:i], start}] += c
		}
	}
	if err := rows.Err(); err != nil {
		return nil, nil, nil, err
	}
	counts = make([]int64, len(hits))
	resets = make([]time.Time, len(hits))
	for i, h := range hits {
		counts[i], resets[i] = sums[key{h.Name, starts[i]}], fromUS(starts[i]).Add(h.Window)
	}
	return counts, resets, shards, nil
}

func shardNames(name string) []any {
	out := make([]any, counterShards)
	for i := range out {
		out[i] = fmt.Sprintf("%s#%d", name, i)
	}
	return out
}

var shardPlaceholders = strings.TrimSuffix(strings.Repeat("?, ", counterShards), ", ")

func (d *DB) sumShards(ctx context.Context, name string, start int64) (int64, error) {
	var c sql.NullInt64
	err := d.db.QueryRowContext(ctx, "SELECT SUM(count) FROM counters WHERE window_start = ? AND name IN ("+shardPlaceholders+")",
		append([]any{start}, shardNames(name)...)...).Scan(&c)
	return c.Int64, err
}

// Count returns the current window's count without adding to it.
func (d *DB) Count(ctx context.Context, name string, window time.Duration) (int64, time.Time, error) {
	start := now().Truncate(window)
	c, err := d.sumShards(ctx, name, us(start))
	return c, start.Add(window), err
}

// ResetCounter clears a counter (e.g. failures after a success).
func (d *DB) ResetCounter(ctx context.Context, name string) error {
	_, err := d.db.ExecContext(ctx, "DELETE FROM counters WHERE name IN ("+shardPlaceholders+")", shardNames(name)...)
	return err
}
