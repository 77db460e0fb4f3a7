package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/phonebook/phonebook"
)

// MMS outbox states (mms_outbox.state).
const (
	MMSQueued    = "queued"    // waiting to be submitted, or to be retried
	MMSSubmitted = "submitted" // the MMSC accepted it (SubmitRsp success); waiting for a delivery report
	MMSDelivered = "delivered" // the recipient retrieved it
	MMSFailed    = "failed"    // refused for good, or the recipient rejected it
	MMSExpired   = "expired"   // not sent within its validity, or the MMSC reported it expired
	MMSToSMS     = "to_sms"    // refused as MMS: waiting to be handed to the SMS fallback
	MMSSMS       = "sms"       // handed to the SMS fallback: the SMS outbox has it
)

// MMS is one message in the MMS outbox.
type MMS struct {
	ID            int64
	Dest          string // E.164
	Source        string // "" = the link's sender address
	Sender        string // the IM user it comes from ("" for other kinds)
	Subject       string
	Caption       string
	Media         []string // media ids, in presentation order
	Kind          string   // "fallback", ...
	Ref           string   // the caller's reference, e.g. a relay message id
	State         string
	Attempts      int
	NextAttemptAt time.Time
	CreatedAt     time.Time
	ExpiresAt     time.Time
	UpdatedAt     time.Time
	Error         string
	Link          string // the link that accepted it
	MessageID     string // the MMSC's MessageID
	SubmittedAt   time.Time
	DoneAt        time.Time
}

// MMSOutcome is the result of one attempt at a claimed message.
type MMSOutcome struct {
	ID    int64
	State string // submitted, failed, expired, to_sms, sms, or queued to retry
	// With State queued: when to try again.
	NextAttemptAt time.Time
	// NoAttempt: nothing reached the MMSC (no link, the outbox's own
	// reasons, a message refused before submitting, the SMS hand-over); the
	// attempt is not counted.
	NoAttempt bool
	Error     string
	Link      string // with State submitted
	MessageID string // with State submitted
}

// MMSChange is a state change of a message, for the outbox's listeners.
type MMSChange struct {
	ID       int64
	Kind     string
	Ref      string
	Dest     string
	Sender   string
	State    string
	Error    string
	Attempts int
}

// MMSReport is a delivery report from an MMSC, by the MessageID of the
// SubmitRsp on the link it arrived on.
type MMSReport struct {
	Link      string
	MessageID string
	State     string // delivered, failed, expired, to_sms
	Error     string
}

// EnqueueMMS stores messages in state queued, due at once, in one
// transaction, and returns their ids. Once it returns they survive a crash.
func (d *DB) EnqueueMMS(ctx context.Context, msgs ...MMS) ([]int64, error) {
	ids := make([]int64, 0, len(msgs))
	err := d.tx(ctx, func(tx *sql.Tx) error {
		ids = ids[:0]
		t := now()
		for _, m := range msgs {
			media, err := json.Marshal(m.Media)
			if err != nil {
				return err
			}
			if m.Media == nil {
				media = []byte("[]")
			}
			due := m.NextAttemptAt
			if due.IsZero() {
				due = t
			}
			res, err := tx.ExecContext(ctx, `INSERT INTO mms_outbox
				(dest, source, sender, subject, caption, media, kind, ref, state, attempts, next_attempt_at, created_at, expires_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)`,
				m.Dest, m.Source, m.Sender, clip(m.Subject, 191), m.Caption, string(media), m.Kind, clip(m.Ref, 191), MMSQueued,
				micros(due), micros(t), micros(m.ExpiresAt), micros(t))
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
	})
	if err != nil {
		return nil, fmt.Errorf("store: enqueue mms: %w", err)
	}
	return ids, nil
}

const mmsCols = `id, dest, source, sender, subject, caption, media, kind, ref, state, attempts, next_attempt_at, created_at, expires_at,
	updated_at, error, link, mm7_message_id, submitted_at, done_at`

func scanMMS(sc interface{ Scan(...any) error }) (MMS, error) {
	var m MMS
	var media string
	var next, created, expires, updated, submitted, done int64
	if err := sc.Scan(&m.ID, &m.Dest, &m.Source, &m.Sender, &m.Subject, &m.Caption, &media, &m.Kind, &m.Ref, &m.State, &m.Attempts,
		&next, &created, &expires, &updated, &m.Error, &m.Link, &m.MessageID, &submitted, &done); err != nil {
		return MMS{}, err
	}
	if err := json.Unmarshal([]byte(media), &m.Media); err != nil {
		return MMS{}, fmt.Errorf("mms %d: media list: %w", m.ID, err)
	}
	m.NextAttemptAt, m.CreatedAt, m.ExpiresAt = fromMicros(next), fromMicros(created), fromMicros(expires)
	m.UpdatedAt, m.SubmittedAt, m.DoneAt = fromMicros(updated), fromMicros(submitted), fromMicros(done)
	return m, nil
}

// ClaimMMS leases up to limit due messages (queued, or to_sms: waiting for
// the SMS fallback) to node for lease, as ClaimSMS does: a claimed message
// is invisible to other claimers until its lease ends or RecordMMS settles
// it, so several nodes drain one outbox without sending a message twice,
// and a dead node's claims come back when their leases run out.
func (d *DB) ClaimMMS(ctx context.Context, node string, limit int, lease time.Duration) ([]MMS, error) {
	var out []MMS
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		t := now()
		q := `SELECT ` + mmsCols + ` FROM mms_outbox WHERE state IN (?, ?) AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?`
		if d.dialect == MySQL {
			q += " FOR UPDATE SKIP LOCKED"
		}
		rows, err := tx.QueryContext(ctx, q, MMSQueued, MMSToSMS, micros(t), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			m, err := scanMMS(rows)
			if err != nil {
				rows.Close()
				return err
			}
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
		_, err = tx.ExecContext(ctx, `UPDATE mms_outbox SET claimed_by = ?, claimed_until = ?, next_attempt_at = ?, updated_at = ?
			WHERE id IN (`+marks(len(ids))+`)`, args...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: claim mms: %w", err)
	}
	return out, nil
}

// ReleaseMMSClaims hands back every waiting message node holds: called when
// node starts, they are the claims of its previous run. It returns how
// many it released.
func (d *DB) ReleaseMMSClaims(ctx context.Context, node string) (int64, error) {
	t := micros(now())
	res, err := d.db.ExecContext(ctx, `UPDATE mms_outbox SET claimed_by = '', claimed_until = 0, next_attempt_at = ?, updated_at = ?
		WHERE state IN (?, ?) AND claimed_by = ?`, t, t, MMSQueued, MMSToSMS, node)
	if err != nil {
		return 0, fmt.Errorf("store: release mms claims: %w", err)
	}
	return res.RowsAffected()
}

// RecordMMS makes the outcome of an attempt durable. It is ignored (no
// change, no error) when node no longer holds the message: its lease ran
// out and another node claimed it, or it was settled meanwhile. A message
// recorded as submitted takes a delivery report that came first. It
// returns the changes, in order.
func (d *DB) RecordMMS(ctx context.Context, node string, o MMSOutcome) ([]MMSChange, error) {
	var changes []MMSChange
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		changes = changes[:0]
		t := now()
		var m MMS
		q := `SELECT id, kind, ref, dest, sender, state, attempts, claimed_by FROM mms_outbox WHERE id = ?` + d.forUpdate()
		var claimedBy string
		err := tx.QueryRowContext(ctx, q, o.ID).Scan(&m.ID, &m.Kind, &m.Ref, &m.Dest, &m.Sender, &m.State, &m.Attempts, &claimedBy)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if claimedBy != node || (m.State != MMSQueued && m.State != MMSToSMS) {
			return nil
		}
		attempts := m.Attempts
		if !o.NoAttempt {
			attempts++
		}
		switch o.State {
		case MMSQueued:
			_, err = tx.ExecContext(ctx, `UPDATE mms_outbox SET state = ?, attempts = ?, next_attempt_at = ?, updated_at = ?, error = ?,
				claimed_by = '', claimed_until = 0 WHERE id = ?`,
				MMSQueued, attempts, micros(o.NextAttemptAt), micros(t), clip(o.Error, 255), o.ID)
			return err // a retry is no change for listeners
		case MMSSubmitted:
			_, err = tx.ExecContext(ctx, `UPDATE mms_outbox SET state = ?, attempts = ?, updated_at = ?, error = '', claimed_by = '', claimed_until = 0,
				link = ?, mm7_message_id = ?, submitted_at = ? WHERE id = ?`,
				MMSSubmitted, attempts, micros(t), clip(o.Link, 64), clip(o.MessageID, 128), micros(t), o.ID)
		case MMSToSMS:
			// Due for the SMS fallback (at once, or at NextAttemptAt when
			// the hand-over is retried); claimed again like a queued one.
			// An empty error keeps the one before.
			due, e := o.NextAttemptAt, clip(o.Error, 255)
			if due.IsZero() {
				due = t
			}
			_, err = tx.ExecContext(ctx, `UPDATE mms_outbox SET state = ?, attempts = ?, next_attempt_at = ?, updated_at = ?,
				error = CASE WHEN ? = '' THEN error ELSE ? END, claimed_by = '', claimed_until = 0 WHERE id = ?`,
				MMSToSMS, attempts, micros(due), micros(t), e, e, o.ID)
			if err == nil && m.State == MMSToSMS {
				return nil // a retried hand-over is no change for listeners
			}
		case MMSFailed, MMSExpired, MMSSMS:
			// An empty error keeps the one before (why the MMS went to SMS).
			e := clip(o.Error, 255)
			_, err = tx.ExecContext(ctx, `UPDATE mms_outbox SET state = ?, attempts = ?, updated_at = ?,
				error = CASE WHEN ? = '' THEN error ELSE ? END, claimed_by = '', claimed_until = 0,
				done_at = ? WHERE id = ?`, o.State, attempts, micros(t), e, e, micros(t), o.ID)
		default:
			return fmt.Errorf("mms outcome state %q", o.State)
		}
		if err != nil {
			return err
		}
		changes = append(changes, MMSChange{ID: m.ID, Kind: m.Kind, Ref: m.Ref, Dest: m.Dest, Sender: m.Sender, State: o.State,
			Error: o.Error, Attempts: attempts})
		if o.State != MMSSubmitted || o.MessageID == "" {
			return nil
		}
		// A delivery report that came before this commit.
		var r MMSReport
		q = `SELECT state, error FROM mms_reports_pending WHERE message_id = ? AND link = ?` + d.forUpdate()
		err = tx.QueryRowContext(ctx, q, clip(o.MessageID, 128), clip(o.Link, 64)).Scan(&r.State, &r.Error)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM mms_reports_pending WHERE message_id = ? AND link = ?`,
			clip(o.MessageID, 128), clip(o.Link, 64)); err != nil {
			return err
		}
		c, ok, err := d.applyReport(ctx, tx, m.ID, r, t)
		if ok {
			changes = append(changes, c)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: record mms: %w", err)
	}
	return changes, nil
}

// applyReport applies a delivery report to a submitted message; ok is
// false when the message is not (or no longer) submitted.
func (d *DB) applyReport(ctx context.Context, tx *sql.Tx, id int64, r MMSReport, t time.Time) (MMSChange, bool, error) {
	switch r.State {
	case MMSDelivered, MMSFailed, MMSExpired:
	case MMSToSMS:
		// The recipient's phone refused it: due at once for the SMS fallback.
	default:
		return MMSChange{}, false, fmt.Errorf("mms report state %q", r.State)
	}
	done := micros(t)
	if r.State == MMSToSMS {
		done = 0
	}
	res, err := tx.ExecContext(ctx, `UPDATE mms_outbox SET state = ?, error = ?, updated_at = ?, done_at = ?, next_attempt_at = ?
		WHERE id = ? AND state = ?`, r.State, clip(r.Error, 255), micros(t), done, micros(t), id, MMSSubmitted)
	if err != nil {
		return MMSChange{}, false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return MMSChange{}, false, err
	}
	c := MMSChange{ID: id, State: r.State, Error: r.Error}
	err = tx.QueryRowContext(ctx, `SELECT kind, ref, dest, sender, attempts FROM mms_outbox WHERE id = ?`, id).
		Scan(&c.Kind, &c.Ref, &c.Dest, &c.Sender, &c.Attempts)
	return c, true, err
}

// ApplyMMSReport applies a delivery report to the message the link's
// MessageID names. When none is submitted under it (yet: the report can
// beat the commit of its SubmitRsp), the report is kept and applied when
// the message is recorded; kept reports are dropped by PurgeMMS after an
// hour. It returns the change, if any, and whether a message matched.
// Reports that only say the message is on its way (state "") match and
// change nothing.
func (d *DB) ApplyMMSReport(ctx context.Context, r MMSReport) ([]MMSChange, bool, error) {
	if r.MessageID == "" {
		return nil, false, phonebook.Errorf(phonebook.EInvalid, "a delivery report without a message id")
	}
	var changes []MMSChange
	matched := false
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		changes, matched = changes[:0], false
		t := now()
		var id int64
		var state string
		// Of several messages under one id on a link (ids recycled), the one
		// still waiting for its report, then the newest.
		err := tx.QueryRowContext(ctx, `SELECT id, state FROM mms_outbox WHERE mm7_message_id = ? AND link = ?
			ORDER BY CASE WHEN state = ? THEN 0 ELSE 1 END, id DESC LIMIT 1`+d.forUpdate(),
			clip(r.MessageID, 128), clip(r.Link, 64), MMSSubmitted).Scan(&id, &state)
		if errors.Is(err, sql.ErrNoRows) {
			if r.State == "" {
				return nil
			}
			verb, tail := "INSERT IGNORE INTO", ""
			if d.dialect == SQLite {
				verb, tail = "INSERT INTO", " ON CONFLICT (message_id, link) DO NOTHING"
			}
			_, err = tx.ExecContext(ctx, verb+` mms_reports_pending (message_id, link, state, error, received_at) VALUES (?, ?, ?, ?, ?)`+tail,
				clip(r.MessageID, 128), clip(r.Link, 64), r.State, clip(r.Error, 255), micros(t))
			return err
		}
		if err != nil {
			return err
		}
		matched = true
		if r.State == "" || state != MMSSubmitted {
			return nil // on its way, or already settled (a report sent twice)
		}
		c, ok, err := d.applyReport(ctx, tx, id, r, t)
		if ok {
			changes = append(changes, c)
		}
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("store: apply mms report: %w", err)
	}
	return changes, matched, nil
}

// GetMMS returns one message of the MMS outbox.
func (d *DB) GetMMS(ctx context.Context, id int64) (MMS, error) {
	m, err := scanMMS(d.db.QueryRowContext(ctx, `SELECT `+mmsCols+` FROM mms_outbox WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return MMS{}, phonebook.Errorf(phonebook.ENotFound, "no mms %d in the outbox", id)
	}
	if err != nil {
		return MMS{}, fmt.Errorf("store: get mms: %w", err)
	}
	return m, nil
}

// MMSByRef returns the messages of kind with reference ref, oldest first.
func (d *DB) MMSByRef(ctx context.Context, kind, ref string) ([]MMS, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+mmsCols+` FROM mms_outbox WHERE kind = ? AND ref = ? ORDER BY id`, kind, ref)
	if err != nil {
		return nil, fmt.Errorf("store: mms by ref: %w", err)
	}
	defer rows.Close()
	var out []MMS
	for rows.Next() {
		m, err := scanMMS(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// MMSDepth returns how many messages wait to be sent (queued or to_sms)
// and when the oldest of them was queued (zero when none).
func (d *DB) MMSDepth(ctx context.Context) (int64, time.Time, error) {
	var n int64
	var oldest sql.NullInt64
	if err := d.db.QueryRowContext(ctx, `SELECT COUNT(*), MIN(created_at) FROM mms_outbox WHERE state IN (?, ?)`,
		MMSQueued, MMSToSMS).Scan(&n, &oldest); err != nil {
		return 0, time.Time{}, fmt.Errorf("store: mms depth: %w", err)
	}
	if !oldest.Valid {
		return n, time.Time{}, nil
	}
	return n, fromMicros(oldest.Int64), nil
}

// PurgeMMS deletes finished messages last updated before before (and
// submitted ones whose validity ended before it), and kept delivery
// reports received before reportsBefore. It returns the number of messages
// deleted.
func (d *DB) PurgeMMS(ctx context.Context, before, reportsBefore time.Time, limit int) (int64, error) {
	var n int64
	err := d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM mms_reports_pending WHERE received_at < ?`, micros(reportsBefore)); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT id FROM mms_outbox
			WHERE (state IN (?, ?, ?, ?) AND updated_at < ?) OR (state = ? AND expires_at < ?) ORDER BY id LIMIT ?`,
			MMSDelivered, MMSFailed, MMSExpired, MMSSMS, micros(before), MMSSubmitted, micros(before), limit)
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
		if err := rows.Err(); err != nil || len(ids) == 0 {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM mms_outbox WHERE id IN (`+marks(len(ids))+`)`, int64Args(ids)...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: purge mms: %w", err)
	}
	return n, nil
}

// Sources of MMS capability (mms_capability.source).
const (
	CapabilityOperator = "operator" // provisioned by the operator: wins over the others
	CapabilityClient   = "client"   // reported by the handset at login
	CapabilityMMSC     = "mmsc"     // an MMSC answered "not MMS-capable"
)

// MMSCapability is what one source says about a number.
type MMSCapability struct {
	Number    phonebook.MSISDN
	Source    string
	Capable   bool
	UpdatedAt time.Time
}

func validCapabilitySource(s string) error {
	switch s {
	case CapabilityOperator, CapabilityClient, CapabilityMMSC:
		return nil
	}
	return phonebook.Errorf(phonebook.EInvalid, "MMS capability source %q is not operator, client or mmsc", s)
}

// SetMMSCapability records what sources say about numbers, in one
// transaction, replacing what the same source said before.
func (d *DB) SetMMSCapability(ctx context.Context, cs ...MMSCapability) error {
	for _, c := range cs {
		if err := validCapabilitySource(c.Source); err != nil {
			return err
		}
		if c.Number == "" {
			return phonebook.Errorf(phonebook.EInvalidNumber, "an MMS capability without a number")
		}
	}
	upsert := `INSERT INTO mms_capability (number, source, capable, updated_at) VALUES %s
		ON DUPLICATE KEY UPDATE capable = VALUES(capable), updated_at = VALUES(updated_at)`
	if d.dialect == SQLite {
		upsert = `INSERT INTO mms_capability (number, source, capable, updated_at) VALUES %s
		ON CONFLICT (number, source) DO UPDATE SET capable = excluded.capable, updated_at = excluded.updated_at`
	}
	err := d.tx(ctx, func(tx *sql.Tx) error {
		t := now()
		const chunk = 200
		for start := 0; start < len(cs); start += chunk {
			batch := cs[start:min(start+chunk, len(cs))]
			// One number twice in a batch: the last one counts.
			last := map[[2]string]int{}
			for i, c := range batch {
				last[[2]string{string(c.Number), c.Source}] = i
			}
			var args []any
			n := 0
			for i, c := range batch {
				if last[[2]string{string(c.Number), c.Source}] != i {
					continue
				}
				at := c.UpdatedAt
				if at.IsZero() {
					at = t
				}
				capable := 0
				if c.Capable {
					capable = 1
				}
				args = append(args, string(c.Number), c.Source, capable, micros(at))
				n++
			}
			vals := ""
			for i := 0; i < n; i++ {
				if i > 0 {
					vals += ","
				}
				vals += "(?,?,?,?)"
			}
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(upsert, vals), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: set mms capability: %w", err)
	}
	return nil
}

// DeleteMMSCapability forgets what source said about number ("" = every
// source); it reports whether there was anything.
func (d *DB) DeleteMMSCapability(ctx context.Context, number phonebook.MSISDN, source string) (bool, error) {
	q, args := `DELETE FROM mms_capability WHERE number = ?`, []any{string(number)}
	if source != "" {
		if err := validCapabilitySource(source); err != nil {
			return false, err
		}
		q += ` AND source = ?`
		args = append(args, source)
	}
	res, err := d.db.ExecContext(ctx, q, args...)
	if err != nil {
		return false, fmt.Errorf("store: delete mms capability: %w", err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// MMSCapabilities returns what every source says about number.
func (d *DB) MMSCapabilities(ctx context.Context, number phonebook.MSISDN) ([]MMSCapability, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT source, capable, updated_at FROM mms_capability WHERE number = ? ORDER BY source`, string(number))
	if err != nil {
		return nil, fmt.Errorf("store: mms capability: %w", err)
	}
	defer rows.Close()
	var out []MMSCapability
	for rows.Next() {
		c := MMSCapability{Number: number}
		var capable int
		var at int64
		if err := rows.Scan(&c.Source, &capable, &at); err != nil {
			return nil, err
		}
		c.Capable, c.UpdatedAt = capable != 0, fromMicros(at)
		out = append(out, c)
	}
	return out, rows.Err()
}
