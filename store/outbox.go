package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
)

// Outbox states (sms_outbox.state and sms_outbox_parts.state).
const (
	smsQueued        = "queued"
	smsSubmitted     = "submitted"
	smsDelivered     = "delivered"
	smsUndeliverable = "undeliverable"
	smsExpired       = "expired"
	smsFailed        = "failed"
)

// SMS is one message in the outbox.
type SMS struct {
	ID            int64
	Dest          string // E.164
	Source        string // "" = the link's default source address
	Text          string
	Kind          string // "verify", "fallback", ...
	Ref           string // the caller's reference, e.g. a relay message id
	State         string
	Attempts      int
	NextAttemptAt time.Time
	CreatedAt     time.Time
	ExpiresAt     time.Time
	UpdatedAt     time.Time
	Error         string
	// SentParts lists the parts (1-based seq) the SMSC has already accepted;
	// ClaimSMS fills it so that only the others are submitted.
	SentParts []int
}

// SMSPart is a part the SMSC accepted: its submit_sm_resp arrived.
type SMSPart struct {
	OutboxID   int64
	Seq, Total int
	Link       string
	MessageID  string // normalised SMSC message id
	// ReceiptID is the normalised id its receipt will carry when the link's
	// id forms are known ("" when not: its receipt then waits for
	// ApplyPendingReceipts); RecordSMS applies a stored receipt under it.
	ReceiptID   string
	State       string // set by reads; RecordSMS stores "submitted"
	Error       string
	SubmittedAt time.Time
	DoneAt      time.Time
}

// SMSOutcome is the result of one attempt at a claimed message.
type SMSOutcome struct {
	ID            int64
	Kind, Ref     string    // copied into the change, as claimed
	State         string    // "submitted", "failed", "expired", or "queued" to retry
	NextAttemptAt time.Time // when State is "queued"
	NoAttempt     bool      // with State "queued": nothing reached the SMSC; the attempt is not counted
	Error         string
}

// SMSChange is a state change of a message, for the outbox's listeners.
type SMSChange struct {
	ID    int64
	Kind  string
	Ref   string
	State string
	Error string
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMicro(v).UTC()
}

func marks(n int) string { return strings.TrimSuffix(strings.Repeat("?,", n), ",") }

func int64Args(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

func stringArgs(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !isRuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// txRetry runs fn in a transaction and runs it again when MySQL chose it as
// a deadlock victim or timed out on a lock: the outbox's writers lock rows of
// two tables in orders that cannot all be made the same. On MySQL it reads
// committed data, which takes no gap locks.
func (d *DB) txRetry(ctx context.Context, fn func(*sql.Tx) error) error {
	var opts *sql.TxOptions
	if d.dialect == MySQL {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	return d.txWith(ctx, opts, fn)
}

func (d *DB) forUpdate() string {
	if d.dialect == MySQL {
		return " FOR UPDATE"
	}
	return "" // SQLite: the transaction already holds the write lock
}

// EnqueueSMS stores messages in state queued, due at once, in one
// transaction, and returns their ids. Once it returns they survive a crash.
func (d *DB) EnqueueSMS(ctx context.Context, msgs ...SMS) ([]int64, error) {
	return d.enqueueSMS(ctx, "", 0, msgs)
}

// EnqueueClaimedSMS stores messages as EnqueueSMS does, already claimed by
// node for lease, as ClaimSMS would leave them: the node that enqueues a
// message and has room to send it at once saves the claim's transaction.
// If node dies, the messages come back when the lease ends (or when node
// starts again and calls ReleaseSMSClaims).
func (d *DB) EnqueueClaimedSMS(ctx context.Context, node string, lease time.Duration, msgs ...SMS) ([]int64, error) {
	if node == "" || lease <= 0 {
		return nil, errors.New("store: enqueue claimed sms: a node and a lease are required")
	}
	return d.enqueueSMS(ctx, node, lease, msgs)
}

func (d *DB) enqueueSMS(ctx context.Context, node string, lease time.Duration, msgs []SMS) ([]int64, error) {
	ids := make([]int64, 0, len(msgs))
	insert := func(x execer) error {
		ids = ids[:0]
		t := now()
		var until int64
		if node != "" {
			until = micros(t.Add(lease))
		}
		for _, m := range msgs {
			created := m.CreatedAt
			if created.IsZero() {
				created = t
			}
			due := micros(m.NextAttemptAt)
			if m.NextAttemptAt.IsZero() {
				due = micros(created)
			}
			if node != "" {
				due = until // out of the due index until the lease ends, as a claim does
			}
			// Not prepared: with the MySQL driver's client-side
			// interpolation an insert is one round trip.
			res, err := x.ExecContext(ctx, `INSERT INTO sms_outbox
				(dest, source, text, kind, ref, state, attempts, next_attempt_at, created_at, expires_at, updated_at, claimed_by, claimed_until)
				VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)`,
				m.Dest, m.Source, m.Text, m.Kind, m.Ref, smsQueued, due, micros(created), micros(m.ExpiresAt), micros(t), node, until)
			if err != nil {
				return err
			}
			id, err := res.LastInsertId()
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	}
	var err error
	if len(msgs) == 1 {
		err = insert(d.db) // one statement is its own transaction
	} else {
		err = d.tx(ctx, func(tx *sql.Tx) error { return insert(tx) })
	}
	if err != nil {
		return nil, fmt.Errorf("store: enqueue sms: %w", err)
	}
	return ids, nil
}

// ClaimSMS leases up to limit due, queued messages to node for lease. A
// claimed message is invisible to other claimers until its lease ends or
// RecordSMS settles it, so several nodes can drain one outbox without
// sending a message twice, and the messages of a node that died come back
// when its leases run out. MySQL/MariaDB skip rows another claimer has
// locked (SKIP LOCKED); SQLite's write lock serialises claimers.
func (d *DB) ClaimSMS(ctx context.Context, node string, limit int, lease time.Duration) ([]SMS, error) {
	var out []SMS
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		t := now()
		q := `SELECT id, dest, source, text, kind, ref, attempts, created_at, expires_at, error
			FROM sms_outbox WHERE state = ? AND next_attempt_at <= ?
			ORDER BY next_attempt_at LIMIT ?`
		if d.dialect == MySQL {
			q += " FOR UPDATE SKIP LOCKED"
		}
		rows, err := tx.QueryContext(ctx, q, smsQueued, micros(t), limit)
		if err != nil {
			return err
		}
		byID := map[int64]int{}
		for rows.Next() {
			var m SMS
			var created, expires int64
			if err := rows.Scan(&m.ID, &m.Dest, &m.Source, &m.Text, &m.Kind, &m.Ref, &m.Attempts, &created, &expires, &m.Error); err != nil {
				rows.Close()
				return err
			}
			m.State, m.CreatedAt, m.ExpiresAt = smsQueued, fromMicros(created), fromMicros(expires)
			byID[m.ID] = len(out)
			out = append(out, m)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(out) == 0 {
			return err
		}
		ids := make([]int64, len(out))
		for i, m := range out {
			ids[i] = m.ID
		}
		until := micros(t.Add(lease))
		args := append([]any{node, until, until, micros(t)}, int64Args(ids)...)
		if _, err := tx.ExecContext(ctx, `UPDATE sms_outbox SET claimed_by = ?, claimed_until = ?, next_attempt_at = ?, updated_at = ?
			WHERE id IN (`+marks(len(ids))+`)`, args...); err != nil {
			return err
		}
		rows, err = tx.QueryContext(ctx, `SELECT outbox_id, seq FROM sms_outbox_parts WHERE outbox_id IN (`+marks(len(ids))+`)`, int64Args(ids)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var seq int
			if err := rows.Scan(&id, &seq); err != nil {
				return err
			}
			out[byID[id]].SentParts = append(out[byID[id]].SentParts, seq)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: claim sms: %w", err)
	}
	for i := range out {
		slices.Sort(out[i].SentParts)
	}
	return out, nil
}

// ReleaseSMSClaims hands back every queued message node holds: called when
// node starts, they are the claims of its previous run, which died with
// them. It returns how many it released.
func (d *DB) ReleaseSMSClaims(ctx context.Context, node string) (int64, error) {
	t := micros(now())
	res, err := d.db.ExecContext(ctx, `UPDATE sms_outbox SET claimed_by = '', claimed_until = 0, next_attempt_at = ?, updated_at = ?
		WHERE state = ? AND claimed_by = ?`, t, t, smsQueued, node)
	if err != nil {
		return 0, fmt.Errorf("store: release sms claims: %w", err)
	}
	return res.RowsAffected()
}

// GetSMS returns a message and its accepted parts.
func (d *DB) GetSMS(ctx context.Context, id int64) (SMS, []SMSPart, error) {
	var m SMS
	var next, created, expires, updated int64
	err := d.db.QueryRowContext(ctx, `SELECT id, dest, source, text, kind, ref, state, attempts, next_attempt_at, created_at, expires_at, updated_at, error
		FROM sms_outbox WHERE id = ?`, id).Scan(&m.ID, &m.Dest, &m.Source, &m.Text, &m.Kind, &m.Ref, &m.State, &m.Attempts,
		&next, &created, &expires, &updated, &m.Error)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return SMS{}, nil, phonebook.Errorf(phonebook.ENotFound, "no sms %d in the outbox", id)
		}
		return SMS{}, nil, fmt.Errorf("store: get sms: %w", err)
	}
	m.NextAttemptAt, m.CreatedAt, m.ExpiresAt, m.UpdatedAt = fromMicros(next), fromMicros(created), fromMicros(expires), fromMicros(updated)
	rows, err := d.db.QueryContext(ctx, `SELECT seq, total, link, smsc_message_id, state, error, submitted_at, done_at
		FROM sms_outbox_parts WHERE outbox_id = ? ORDER BY seq`, id)
	if err != nil {
		return SMS{}, nil, fmt.Errorf("store: get sms parts: %w", err)
	}
	defer rows.Close()
	var parts []SMSPart
	for rows.Next() {
		p := SMSPart{OutboxID: id}
		var sub, done int64
		if err := rows.Scan(&p.Seq, &p.Total, &p.Link, &p.MessageID, &p.State, &p.Error, &sub, &done); err != nil {
			return SMS{}, nil, err
		}
		p.SubmittedAt, p.DoneAt = fromMicros(sub), fromMicros(done)
		m.SentParts = append(m.SentParts, p.Seq)
		parts = append(parts, p)
	}
	return m, parts, rows.Err()
}

// SMSDepth returns how many messages wait to be sent and when the oldest
// of them was queued (zero when none).
func (d *DB) SMSDepth(ctx context.Context) (int64, time.Time, error) {
	// Both read only the (state, next_attempt_at, id) index; the oldest
	// message is the one with the lowest id.
	var n int64
	var first sql.NullInt64
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(id) FROM sms_outbox WHERE state = ?`, smsQueued).Scan(&n, &first); err != nil {
		return 0, time.Time{}, fmt.Errorf("store: sms depth: %w", err)
	}
	if !first.Valid {
		return 0, time.Time{}, nil
	}
	var created int64
	err := d.db.QueryRowContext(ctx, `SELECT created_at FROM sms_outbox WHERE id = ?`, first.Int64).Scan(&created)
	if errors.Is(err, sql.ErrNoRows) {
		return n, time.Time{}, nil // sent and purged in between
	}
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("store: sms depth: %w", err)
	}
	return n, fromMicros(created), nil
}

// PurgeSMS deletes finished messages last updated before before (and
// submitted ones whose validity ended before it), with their parts, and
// stored receipts older than before. It returns the number of messages
// deleted.
func (d *DB) PurgeSMS(ctx context.Context, before time.Time, limit int) (int64, error) {
	bound, err := d.smsIDBefore(ctx, before)
	if err != nil || bound == 0 {
		return 0, err
	}
	var n int64
	err = d.tx(ctx, func(tx *sql.Tx) error {
		// Only messages created before the cut-off can be finished before
		// it, and they have the lowest ids: the primary key bounds the scan.
		// Submitted messages count as finished once their validity ended
		// before the cut-off: no receipt is coming any more.
		rows, err := tx.QueryContext(ctx, `SELECT id FROM sms_outbox
			WHERE id < ? AND ((state NOT IN (?, ?) AND updated_at < ?) OR (state = ? AND expires_at < ?)) ORDER BY id LIMIT ?`,
			bound, smsQueued, smsSubmitted, micros(before), smsSubmitted, micros(before), limit)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if _, err := tx.ExecContext(ctx, `DELETE FROM sms_receipts_pending WHERE received_at < ?`, micros(before)); err != nil {
			return err
		}
		if len(ids) == 0 {
			return rows.Err()
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sms_outbox_parts WHERE outbox_id IN (`+marks(len(ids))+`)`, int64Args(ids)...); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM sms_outbox WHERE id IN (`+marks(len(ids))+`)`, int64Args(ids)...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: purge sms: %w", err)
	}
	return n, nil
}

// smsIDBefore finds, by binary search on the primary key, an id such that
// the messages below it were created before t (ids grow with creation
// time, give or take the clocks of several nodes); 0 when there is none.
func (d *DB) smsIDBefore(ctx context.Context, t time.Time) (int64, error) {
	var lo, hi sql.NullInt64
	if err := d.db.QueryRowContext(ctx, `SELECT MIN(id), MAX(id) FROM sms_outbox`).Scan(&lo, &hi); err != nil {
		return 0, fmt.Errorf("store: purge sms: %w", err)
	}
	if !lo.Valid {
		return 0, nil
	}
	createdAt := func(id int64) (int64, error) { // of the first message at or after id
		var c int64
		err := d.db.QueryRowContext(ctx, `SELECT created_at FROM sms_outbox WHERE id >= ? ORDER BY id LIMIT 1`, id).Scan(&c)
		return c, err
	}
	// Invariant: messages from lo.Int64 on are searched; a is the answer so far.
	a, l, h := int64(0), lo.Int64, hi.Int64
	for l <= h {
		mid := l + (h-l)/2
		c, err := createdAt(mid)
		if err != nil {
			return 0, fmt.Errorf("store: purge sms: %w", err)
		}
		if c < micros(t) {
			a, l = mid+1, mid+1
		} else {
			h = mid - 1
		}
	}
	return a, nil
}
