package store

// This file holds delivery receipts: storing them (AddReceipts), matching
// them to sent parts and applying them (ApplyReceipts, ApplyPendingReceipts).

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

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
