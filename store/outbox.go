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

// SMSReceipt is a delivery receipt to apply. State "" (ENROUTE, ACCEPTD)
// changes nothing but is still matched.
type SMSReceipt struct {
	Link      string // the link it arrived on; it matches parts sent over that link
	MessageID string // normalised, as the receipt carries it
	State     string
	Error     string
}

// ReceiptForms says which stored part ids a receipt may be for.
type ReceiptForms struct {
	// Wait: the link's id forms are not known yet; look again later.
	Wait bool
	// Exact is the part id the receipt names; a part under it always wins.
	Exact string
	// Others are forms the receipt may also stand for. They are used only
	// when no part under Exact exists, and only when exactly one part has
	// one of them; the rules give them only once a part under Exact can no
	// longer be recorded.
	Others []string
}

// ReceiptRules gives the forms of a receipt's id received on link age ago.
type ReceiptRules func(link, id string, age time.Duration) ReceiptForms

// Why a receipt matched no part (UnmatchedReceipt.Reason).
const (
	ReceiptAmbiguous = "ambiguous" // several parts fit it; it is kept, never guessed
	ReceiptUnknown   = "unknown"   // no part fitted it within MaxReceiptTries looks; dropped
)

// UnmatchedReceipt is a receipt that could not be applied, reported once
// per reason.
type UnmatchedReceipt struct {
	SMSReceipt
	Reason string
	Parts  []string // for ambiguous ones: the part ids that fit
}

// ReceiptResult is what one pass over stored receipts did.
type ReceiptResult struct {
	Changes   []SMSChange
	Seen      int // receipts looked at
	Unmatched []UnmatchedReceipt
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

// RecordSMS makes a batch of submit results durable in one transaction:
// accepted parts (so they are never submitted again), then the outcome of
// finished attempts by node. Outcomes of messages node no longer holds (its
// lease ran out and another node claimed them, or a receipt settled them)
// are ignored. Receipts that arrived before their part was recorded are
// applied now. It returns the messages whose state changed.
func (d *DB) RecordSMS(ctx context.Context, node string, parts []SMSPart, outcomes []SMSOutcome) ([]SMSChange, error) {
	var changes []SMSChange
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		changes = changes[:0]
		t := now()
		inserted, settleIDs, err := d.insertParts(ctx, tx, parts, t)
		if err != nil {
			return err
		}
		c, submitted, err := d.applyOutcomes(ctx, tx, node, outcomes, t)
		if err != nil {
			return err
		}
		changes = append(changes, c...)
		// A message can only need settling now if a receipt reached one of
		// its parts first: the part was recorded in an earlier batch (or
		// recorded twice), or a pending receipt just matched.
		inBatch := map[int64]int{}
		for _, p := range parts {
			inBatch[p.OutboxID]++
		}
		total := map[int64]int{}
		for _, p := range parts {
			total[p.OutboxID] = p.Total
		}
		for _, id := range submitted {
			if inserted < int64(len(parts)) || inBatch[id] == 0 || inBatch[id] < total[id] {
				settleIDs = append(settleIDs, id)
			}
		}
		c, err = d.settle(ctx, tx, settleIDs, t)
		changes = append(changes, c...)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store: record sms: %w", err)
	}
	return changes, nil
}

// insertParts records accepted parts and applies pending receipts to them;
// it returns the ids of messages a pending receipt touched.
func (d *DB) insertParts(ctx context.Context, tx *sql.Tx, parts []SMSPart, t time.Time) (int64, []int64, error) {
	if len(parts) == 0 {
		return 0, nil, nil
	}
	var inserted int64
	verb, tail := "INSERT IGNORE INTO", ""
	if d.dialect == SQLite {
		verb, tail = "INSERT INTO", " ON CONFLICT (outbox_id, seq) DO NOTHING"
	}
	const chunk = 200
	for start := 0; start < len(parts); start += chunk {
		batch := parts[start:min(start+chunk, len(parts))]
		var sb strings.Builder
		args := make([]any, 0, 7*len(batch))
		sb.WriteString(verb + " sms_outbox_parts (outbox_id, seq, total, link, smsc_message_id, state, submitted_at) VALUES ")
		for i, p := range batch {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(?,?,?,?,?,?,?)")
			at := p.SubmittedAt
			if at.IsZero() {
				at = t
			}
			args = append(args, p.OutboxID, p.Seq, p.Total, p.Link, clip(p.MessageID, 65), smsSubmitted, micros(at))
		}
		sb.WriteString(tail)
		res, err := tx.ExecContext(ctx, sb.String(), args...)
		if err != nil {
			return 0, nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, nil, err
		}
		inserted += n
	}

	// Receipts that came first, under the id the part's receipt carries.
	owners := map[string][]SMSPart{}
	var keys []string
	for _, p := range parts {
		if p.ReceiptID == "" {
			continue
		}
		if _, ok := owners[p.ReceiptID]; !ok {
			keys = append(keys, p.ReceiptID)
		}
		owners[p.ReceiptID] = append(owners[p.ReceiptID], p)
	}
	if len(keys) == 0 {
		return inserted, nil, nil
	}
	// SKIP LOCKED: a receipt another transaction holds is being applied by
	// it (ApplyPendingReceipts), which will see this part once we commit.
	q := `SELECT message_id, link, state, error FROM sms_receipts_pending WHERE message_id IN (` + marks(len(keys)) + `)`
	if d.dialect == MySQL {
		q += " FOR UPDATE SKIP LOCKED"
	}
	rows, err := tx.QueryContext(ctx, q, stringArgs(keys)...)
	if err != nil {
		return 0, nil, err
	}
	var ups []partUpdate
	var matched []any
	for rows.Next() {
		var id, link, state, e string
		if err := rows.Scan(&id, &link, &state, &e); err != nil {
			rows.Close()
			return 0, nil, err
		}
		for _, p := range owners[id] {
			if link == "" || link == p.Link {
				ups = append(ups, partUpdate{id: p.OutboxID, seq: p.Seq, state: state, err: e})
				matched = append(matched, id, link)
				break
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil || len(matched) == 0 {
		return inserted, nil, err
	}
	if err := deletePending(ctx, tx, matched); err != nil {
		return 0, nil, err
	}
	ids, err := d.updateParts(ctx, tx, ups, t)
	return inserted, ids, err
}

// deletePending deletes stored receipts by (message_id, link) pairs.
func deletePending(ctx context.Context, tx *sql.Tx, pairs []any) error {
	const chunk = 2 * 200
	for start := 0; start < len(pairs); start += chunk {
		batch := pairs[start:min(start+chunk, len(pairs))]
		if _, err := tx.ExecContext(ctx, `DELETE FROM sms_receipts_pending WHERE (message_id, link) IN (`+
			strings.TrimSuffix(strings.Repeat("(?,?),", len(batch)/2), ",")+`)`, batch...); err != nil {
			return err
		}
	}
	return nil
}

type partUpdate struct {
	id         int64
	seq        int
	state, err string
}

// updateParts moves parts still waiting for a receipt to their final state,
// grouped so that a batch of receipts costs a few statements; it returns the
// messages touched.
func (d *DB) updateParts(ctx context.Context, tx *sql.Tx, ups []partUpdate, t time.Time) ([]int64, error) {
	type key struct {
		seq        int
		state, err string
	}
	groups := map[key][]int64{}
	var order []key
	var ids []int64
	for _, u := range ups {
		k := key{u.seq, u.state, clip(u.err, 255)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], u.id)
		ids = append(ids, u.id)
	}
	for _, k := range order {
		g := groups[k]
		args := append([]any{k.state, k.err, micros(t), k.seq, smsSubmitted}, int64Args(g)...)
		if _, err := tx.ExecContext(ctx, `UPDATE sms_outbox_parts SET state = ?, error = ?, done_at = ?
			WHERE seq = ? AND state = ? AND outbox_id IN (`+marks(len(g))+`)`, args...); err != nil {
			return nil, err
		}
	}
	return ids, nil
}

func (d *DB) applyOutcomes(ctx context.Context, tx *sql.Tx, node string, outcomes []SMSOutcome, t time.Time) (changes []SMSChange, submitted []int64, err error) {
	type key struct{ state, err string }
	groups := map[key][]SMSOutcome{}
	var order []key
	for _, o := range outcomes {
		e := clip(o.Error, 255)
		if o.State == smsQueued {
			// Only a message still queued and still leased to node takes
			// the outcome.
			cost := 1
			if o.NoAttempt {
				cost = 0
			}
			if _, err := tx.ExecContext(ctx, `UPDATE sms_outbox SET attempts = attempts + ?, next_attempt_at = ?, error = ?,
				claimed_by = '', claimed_until = 0, updated_at = ? WHERE id = ? AND state = ? AND claimed_by = ?`,
				cost, micros(o.NextAttemptAt), e, micros(t), o.ID, smsQueued, node); err != nil {
				return nil, nil, err
			}
			continue
		}
		k := key{o.State, e}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], o)
	}
	for _, k := range order {
		g := groups[k]
		ids := make([]int64, len(g))
		for i, o := range g {
			ids[i] = o.ID
		}
		args := append([]any{k.state, k.err, micros(t), smsQueued, node}, int64Args(ids)...)
		res, err := tx.ExecContext(ctx, `UPDATE sms_outbox SET state = ?, error = ?, attempts = attempts + 1,
			claimed_by = '', claimed_until = 0, updated_at = ? WHERE state = ? AND claimed_by = ? AND id IN (`+marks(len(ids))+`)`, args...)
		if err != nil {
			return nil, nil, err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return nil, nil, err
		}
		took := map[int64]bool{}
		if int(n) < len(ids) {
			// Some were no longer ours: find the ones this statement moved
			// (they carry this transaction's timestamp).
			args := append([]any{k.state, micros(t)}, int64Args(ids)...)
			rows, err := tx.QueryContext(ctx, `SELECT id FROM sms_outbox WHERE state = ? AND updated_at = ? AND claimed_by = '' AND id IN (`+marks(len(ids))+`)`, args...)
			if err != nil {
				return nil, nil, err
			}
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return nil, nil, err
				}
				took[id] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, nil, err
			}
		}
		for _, o := range g {
			if int(n) < len(ids) && !took[o.ID] {
				continue
			}
			changes = append(changes, SMSChange{ID: o.ID, Kind: o.Kind, Ref: o.Ref, State: o.State, Error: k.err})
			if o.State == smsSubmitted {
				submitted = append(submitted, o.ID)
			}
		}
	}
	return changes, submitted, nil
}

// settle derives a message's state from its parts: undeliverable or expired
// as soon as one part is (even while other parts are still queued: they are
// not sent), delivered when it is submitted and every part is delivered.
func (d *DB) settle(ctx context.Context, tx *sql.Tx, ids []int64, t time.Time) ([]SMSChange, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	rows, err := tx.QueryContext(ctx, `SELECT m.id, m.kind, m.ref, m.state, p.seq, p.total, p.state, p.error
		FROM sms_outbox m JOIN sms_outbox_parts p ON p.outbox_id = m.id
		WHERE m.id IN (`+marks(len(ids))+`) ORDER BY m.id, p.seq`+d.forUpdate(), int64Args(ids)...)
	if err != nil {
		return nil, err
	}
	type msg struct {
		kind, ref, state   string
		total, delivered   int
		failState, failErr string
	}
	msgs := map[int64]*msg{}
	var order []int64
	for rows.Next() {
		var id int64
		var kind, ref, mstate, pstate, perr string
		var seq, total int
		if err := rows.Scan(&id, &kind, &ref, &mstate, &seq, &total, &pstate, &perr); err != nil {
			rows.Close()
			return nil, err
		}
		m := msgs[id]
		if m == nil {
			m = &msg{kind: kind, ref: ref, state: mstate, total: total}
			msgs[id] = m
			order = append(order, id)
		}
		switch pstate {
		case smsDelivered:
			m.delivered++
		case smsUndeliverable, smsExpired:
			if m.failState == "" {
				m.failState = pstate
				m.failErr = fmt.Sprintf("part %d of %d %s", seq, total, pstate)
				if perr != "" {
					m.failErr += ": " + perr
				}
			}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var changes []SMSChange
	type key struct{ state, err string }
	groups := map[key][]int64{}
	var gorder []key
	for _, id := range order {
		m := msgs[id]
		if m.state != smsQueued && m.state != smsSubmitted {
			continue
		}
		var c SMSChange
		switch {
		case m.failState != "":
			c = SMSChange{ID: id, Kind: m.kind, Ref: m.ref, State: m.failState, Error: clip(m.failErr, 255)}
		case m.state == smsSubmitted && m.delivered == m.total:
			c = SMSChange{ID: id, Kind: m.kind, Ref: m.ref, State: smsDelivered}
		default:
			continue
		}
		k := key{c.State, c.Error}
		if _, ok := groups[k]; !ok {
			gorder = append(gorder, k)
		}
		groups[k] = append(groups[k], id)
		changes = append(changes, c)
	}
	for _, k := range gorder {
		g := groups[k]
		args := append([]any{k.state, k.err, micros(t), smsQueued, smsSubmitted}, int64Args(g)...)
		if _, err := tx.ExecContext(ctx, `UPDATE sms_outbox SET state = ?, error = ?, updated_at = ?, claimed_by = '', claimed_until = 0
			WHERE state IN (?, ?) AND id IN (`+marks(len(g))+`)`, args...); err != nil {
			return nil, err
		}
	}
	return changes, nil
}

// ApplyReceipts applies a batch of delivery receipts in one transaction,
// matching them by rules (see matchReceipts). A final receipt that matches
// no part is kept in sms_receipts_pending, as AddReceipts keeps it. It
// returns the messages whose state changed and how many receipts matched
// no part.
func (d *DB) ApplyReceipts(ctx context.Context, rs []SMSReceipt, rules ReceiptRules) ([]SMSChange, int, error) {
	var changes []SMSChange
	var unmatched int
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		unmatched = 0
		t := now()
		pr := make([]pendingReceipt, len(rs))
		for i, r := range rs {
			pr[i] = pendingReceipt{SMSReceipt: r, received: t}
		}
		found, ups, err := d.matchReceipts(ctx, tx, pr, rules, t)
		if err != nil {
			return err
		}
		var keep []SMSReceipt
		for i, r := range rs {
			if !found[i].matched {
				unmatched++
				if r.State != "" {
					keep = append(keep, r)
				}
			}
		}
		if err := d.insertPending(ctx, tx, keep, t, t.Add(ReceiptGrace)); err != nil {
			return err
		}
		ids, err := d.updateParts(ctx, tx, ups, t)
		if err != nil {
			return err
		}
		changes, err = d.settle(ctx, tx, ids, t)
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("store: apply receipts: %w", err)
	}
	return changes, unmatched, nil
}

// pendingReceipt is a receipt being matched, with what the table knows.
type pendingReceipt struct {
	SMSReceipt
	received  time.Time
	tries     int
	unmatched string // the reason already reported
}

// receiptMatch is what matchReceipts found for one receipt.
type receiptMatch struct {
	matched bool
	wait    bool     // the rules asked to look again later
	parts   []string // several parts fit: their ids (ambiguous)
}

// matchReceipts finds each receipt's part on the receipt's link: the part
// stored under the exact form if there is one (of several, the one still
// waiting for a receipt, then the newest); otherwise, if the rules give
// other forms, the single part stored under one of them. Two or more such
// parts make the receipt ambiguous: it is not applied. ups holds the
// updates for the final receipts that matched.
func (d *DB) matchReceipts(ctx context.Context, tx *sql.Tx, rs []pendingReceipt, rules ReceiptRules, t time.Time) ([]receiptMatch, []partUpdate, error) {
	out := make([]receiptMatch, len(rs))
	forms := make([]ReceiptForms, len(rs))
	var ids []string
	seen := map[string]bool{}
	add := func(id string) {
		if id != "" && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	for i, r := range rs {
		forms[i] = rules(r.Link, r.MessageID, t.Sub(r.received))
		if forms[i].Wait {
			out[i].wait = true
			continue
		}
		add(forms[i].Exact)
		for _, o := range forms[i].Others {
			add(o)
		}
	}
	if len(ids) == 0 {
		return out, nil, nil
	}
	// A plain read: the updates below only move parts still "submitted",
	// and settle locks what it decides on.
	rows, err := tx.QueryContext(ctx, `SELECT outbox_id, seq, link, smsc_message_id, state, submitted_at FROM sms_outbox_parts
		WHERE smsc_message_id IN (`+marks(len(ids))+`)`, stringArgs(ids)...)
	if err != nil {
		return nil, nil, err
	}
	type row struct {
		id      int64
		seq     int
		link    string
		state   string
		created int64
	}
	byMsgID := map[string][]row{}
	for rows.Next() {
		var r row
		var mid string
		if err := rows.Scan(&r.id, &r.seq, &r.link, &mid, &r.state, &r.created); err != nil {
			rows.Close()
			return nil, nil, err
		}
		byMsgID[mid] = append(byMsgID[mid], r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	var ups []partUpdate
	for i, r := range rs {
		f := forms[i]
		if f.Wait {
			continue
		}
		onLink := func(p row) bool { return r.Link == "" || p.link == r.Link }
		var best *row
		for j, p := range byMsgID[f.Exact] {
			if !onLink(p) {
				continue
			}
			if best == nil {
				best = &byMsgID[f.Exact][j]
				continue
			}
			if ps, bs := p.state == smsSubmitted, best.state == smsSubmitted; ps && !bs || ps == bs && p.created > best.created {
				best = &byMsgID[f.Exact][j]
			}
		}
		if best == nil {
			var fit []string
			for _, o := range f.Others {
				for j, p := range byMsgID[o] {
					if onLink(p) {
						best = &byMsgID[o][j]
						fit = append(fit, o)
					}
				}
			}
			if len(fit) > 1 {
				out[i].parts = fit
				continue
			}
		}
		if best == nil {
			continue
		}
		out[i].matched = true
		if r.State != "" {
			ups = append(ups, partUpdate{id: best.id, seq: best.seq, state: r.State, err: r.Error})
		}
	}
	return out, ups, nil
}

func (d *DB) insertPending(ctx context.Context, tx execer, rs []SMSReceipt, t, due time.Time) error {
	verb, tail := "INSERT IGNORE INTO", ""
	if d.dialect == SQLite {
		verb, tail = "INSERT INTO", " ON CONFLICT (message_id, link) DO NOTHING"
	}
	const chunk = 200
	for start := 0; start < len(rs); start += chunk {
		batch := rs[start:min(start+chunk, len(rs))]
		var sb strings.Builder
		args := make([]any, 0, 6*len(batch))
		sb.WriteString(verb + " sms_receipts_pending (message_id, link, state, error, received_at, next_check_at) VALUES ")
		n := 0
		for _, r := range batch {
			if r.MessageID == "" {
				continue
			}
			if n > 0 {
				sb.WriteByte(',')
			}
			n++
			sb.WriteString("(?,?,?,?,?,?)")
			args = append(args, clip(r.MessageID, 65), clip(r.Link, 64), r.State, clip(r.Error, 255), micros(t), micros(due))
		}
		if n == 0 {
			continue
		}
		sb.WriteString(tail)
		if _, err := tx.ExecContext(ctx, sb.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// ReceiptGrace is how long a stored receipt waits before ApplyPendingReceipts
// looks at it. SMSCs may send a receipt before the submit_sm_resp of its
// part, and the outbox writes accepted parts in batches: in the meantime
// recording the part applies the receipt, with no futile matching first.
const ReceiptGrace = 50 * time.Millisecond

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// AddReceipts stores final delivery receipts durably and cheaply (one
// insert), to be applied by ApplyPendingReceipts. This is what a link's
// deliver_sm handler does before it acknowledges a receipt: the matching
// and settling work then happens in large batches, off the SMPP session.
// A receipt whose id is already pending on its link is stored once.
func (d *DB) AddReceipts(ctx context.Context, rs []SMSReceipt) error {
	t := now()
	if err := d.insertPending(ctx, d.db, rs, t, t.Add(ReceiptGrace)); err != nil {
		return fmt.Errorf("store: add receipts: %w", err)
	}
	return nil
}

// ApplyPendingReceipts applies up to limit stored receipts that are due,
// matched by rules (see matchReceipts): those that match a part update it
// and leave the table; the others are looked at again later, less and less
// often (their part may be recorded by another node), and dropped after
// MaxReceiptTries looks (about an hour: the message was not ours). Those
// the rules hold back (Wait) are looked at again within two seconds and
// keep their tries. Receipts found ambiguous for the first time, and those
// dropped, are reported in Unmatched.
func (d *DB) ApplyPendingReceipts(ctx context.Context, limit int, rules ReceiptRules) (ReceiptResult, error) {
	var res ReceiptResult
	err := d.txRetry(ctx, func(tx *sql.Tx) error {
		res = ReceiptResult{}
		t := now()
		q := `SELECT message_id, link, state, error, tries, received_at, unmatched FROM sms_receipts_pending
			WHERE next_check_at <= ? ORDER BY next_check_at LIMIT ?`
		if d.dialect == MySQL {
			q += " FOR UPDATE SKIP LOCKED"
		}
		rows, err := tx.QueryContext(ctx, q, micros(t), limit)
		if err != nil {
			return err
		}
		var rs []pendingReceipt
		for rows.Next() {
			var r pendingReceipt
			var received int64
			if err := rows.Scan(&r.MessageID, &r.Link, &r.State, &r.Error, &r.tries, &received, &r.unmatched); err != nil {
				rows.Close()
				return err
			}
			r.received = fromMicros(received)
			rs = append(rs, r)
		}
		rows.Close()
		res.Seen = len(rs)
		if err := rows.Err(); err != nil || len(rs) == 0 {
			return err
		}
		found, ups, err := d.matchReceipts(ctx, tx, rs, rules, t)
		if err != nil {
			return err
		}
		var done, ambiguous []any
		type again struct {
			wait  time.Duration
			tries int // added
		}
		later := map[again][]any{}
		for i, f := range found {
			r := rs[i]
			key := []any{r.MessageID, r.Link}
			switch {
			case f.matched:
				done = append(done, key...)
			case f.wait:
				w := min(250*time.Millisecond<<min(r.tries, 3), 2*time.Second)
				later[again{w, 0}] = append(later[again{w, 0}], key...)
			case r.tries+1 >= MaxReceiptTries:
				done = append(done, key...)
				if r.unmatched == "" {
					res.Unmatched = append(res.Unmatched, UnmatchedReceipt{SMSReceipt: r.SMSReceipt, Reason: ReceiptUnknown})
				}
			default:
				if len(f.parts) > 0 && r.unmatched != ReceiptAmbiguous {
					ambiguous = append(ambiguous, key...)
					res.Unmatched = append(res.Unmatched, UnmatchedReceipt{SMSReceipt: r.SMSReceipt, Reason: ReceiptAmbiguous, Parts: f.parts})
				}
				// 250ms, 500ms, 1s ... up to 10 minutes.
				w := min(250*time.Millisecond<<min(r.tries, 12), 10*time.Minute)
				later[again{w, 1}] = append(later[again{w, 1}], key...)
			}
		}
		for a, g := range later {
			args := append([]any{a.tries, micros(t.Add(a.wait))}, g...)
			if _, err := tx.ExecContext(ctx, `UPDATE sms_receipts_pending SET tries = tries + ?, next_check_at = ?
				WHERE (message_id, link) IN (`+strings.TrimSuffix(strings.Repeat("(?,?),", len(g)/2), ",")+`)`, args...); err != nil {
				return err
			}
		}
		if len(ambiguous) > 0 {
			args := append([]any{ReceiptAmbiguous}, ambiguous...)
			if _, err := tx.ExecContext(ctx, `UPDATE sms_receipts_pending SET unmatched = ?
				WHERE (message_id, link) IN (`+strings.TrimSuffix(strings.Repeat("(?,?),", len(ambiguous)/2), ",")+`)`, args...); err != nil {
				return err
			}
		}
		if err := deletePending(ctx, tx, done); err != nil {
			return err
		}
		touched, err := d.updateParts(ctx, tx, ups, t)
		if err != nil {
			return err
		}
		res.Changes, err = d.settle(ctx, tx, touched, t)
		return err
	})
	if err != nil {
		return ReceiptResult{}, fmt.Errorf("store: apply pending receipts: %w", err)
	}
	return res, nil
}

// MaxReceiptTries is how many times a stored receipt is matched against the
// outbox before it is dropped as not ours: after 0.25+0.5+1+...+512 s, then
// 10-minute waits, about an hour in all.
const MaxReceiptTries = 17

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
