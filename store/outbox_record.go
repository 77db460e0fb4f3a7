package store

// This file holds RecordSMS: writing what the SMSC answered for each part
// (accepted parts, outcomes) and settling messages whose parts are all final.

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"
)

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
