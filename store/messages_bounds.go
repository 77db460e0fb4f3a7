package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
)

// The offline store's bounds (relay.max_offline_per_recipient,
// relay.max_offline_per_sender, relay.offline_ttl) and the end of SMS
// fallbacks that cannot succeed.

// OfflineCounts returns how many stored messages each of the senders has
// waiting (for anyone) and each of the recipients has waiting for them.
// Numbers with none are absent from the maps.
func (d *DB) OfflineCounts(ctx context.Context, senders, recipients []phonebook.MSISDN) (bySender, byRecipient map[phonebook.MSISDN]int, err error) {
	count := func(col string, ns []phonebook.MSISDN) (map[phonebook.MSISDN]int, error) {
		out := make(map[phonebook.MSISDN]int, len(ns))
		for len(ns) > 0 {
			chunk := ns[:min(len(ns), 200)]
			ns = ns[len(chunk):]
			args := make([]any, len(chunk))
			for i, n := range chunk {
				args[i] = string(n)
			}
			rows, err := d.db.QueryContext(ctx, "SELECT "+col+", COUNT(*) FROM offline_messages WHERE "+col+" IN ("+
				strings.TrimSuffix(strings.Repeat("?, ", len(chunk)), ", ")+") GROUP BY "+col, args...)
			if err != nil {
				return nil, err
			}
			for rows.Next() {
				var n phonebook.MSISDN
				var c int
				if err := rows.Scan(&n, &c); err != nil {
					rows.Close()
					return nil, err
				}
				out[n] = c
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	if bySender, err = count("sender", senders); err != nil {
		return nil, nil, err
	}
	if byRecipient, err = count("recipient", recipients); err != nil {
		return nil, nil, err
	}
	return bySender, byRecipient, nil
}

// RescheduleFallback moves a stored message's SMS fallback to at (a
// temporary failure's retry, or the sender's quota window reset).
func (d *DB) RescheduleFallback(ctx context.Context, id string, at time.Time) error {
	_, err := d.db.ExecContext(ctx, "UPDATE offline_messages SET sms_due_at = ? WHERE id = ? AND sms_due_at IS NOT NULL", micros(at), id)
	return err
}

// ExpiredMessage is a stored message removed by ExpireMessages.
type ExpiredMessage struct {
	ID          string
	Sender      phonebook.MSISDN
	ClientMsgID string
	Recipient   phonebook.MSISDN
	Failed      bool // its chat record went to FAILED now (it had not gone by SMS, nor failed before)
}

// ExpireMessages deletes up to limit stored messages sent before t (the
// recipient never came to fetch them) and marks their chat records FAILED,
// except those whose SMS fallback was queued (the SMS states stand) or that
// failed before. It returns what it deleted, oldest first.
func (d *DB) ExpireMessages(ctx context.Context, t time.Time, limit int) ([]ExpiredMessage, error) {
	var out []ExpiredMessage
	err := d.tx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		rows, err := tx.QueryContext(ctx, "SELECT id, sender, client_msg_id, recipient FROM offline_messages WHERE sent_at < ? ORDER BY sent_at LIMIT ?",
			micros(t), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			var e ExpiredMessage
			if err := rows.Scan(&e.ID, &e.Sender, &e.ClientMsgID, &e.Recipient); err != nil {
				rows.Close()
				return err
			}
			out = append(out, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range out {
			if _, err := tx.ExecContext(ctx, "DELETE FROM offline_messages WHERE id = ?", out[i].ID); err != nil {
				return err
			}
			r, err := tx.ExecContext(ctx, "UPDATE chat_records SET state = ? WHERE id = ? AND state IN (?, ?)",
				MsgFailed, out[i].ID, MsgStored, MsgSMSQueued)
			if err != nil {
				return err
			}
			n, _ := r.RowsAffected()
			out[i].Failed = n == 1
		}
		return nil
	})
	return out, err
}

// FailStored removes one stored message that can never be delivered (its
// frame is too large for the recipient's connection) and marks its chat
// record FAILED. It returns the record; ENotFound when it is no longer
// stored (acknowledged or failed meanwhile).
func (d *DB) FailStored(ctx context.Context, id string) (ChatRecord, error) {
	err := d.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, "DELETE FROM offline_messages WHERE id = ?", id)
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return phonebook.Errorf(phonebook.ENotFound, "message %s is not stored", id)
		}
		_, err = tx.ExecContext(ctx, "UPDATE chat_records SET state = ? WHERE id = ? AND state <> ?", MsgFailed, id, MsgDelivered)
		return err
	})
	if err != nil {
		return ChatRecord{}, err
	}
	return d.ChatRecord(ctx, id)
}

// Unhit takes back one event counted by Hit in the current window (an SMS
// that was counted against a quota and then could not be queued). It does
// nothing when the window's count is already zero.
func (d *DB) Unhit(ctx context.Context, name string, window time.Duration) error {
	start := us(now().Truncate(window))
	for range counterShards {
		var shard string
		err := d.db.QueryRowContext(ctx, "SELECT name FROM counters WHERE window_start = ? AND count > 0 AND name IN ("+shardPlaceholders+") LIMIT 1",
			append([]any{start}, shardNames(name)...)...).Scan(&shard)
		if err == sql.ErrNoRows {
			return nil
		}
		if err != nil {
			return err
		}
		r, err := d.db.ExecContext(ctx, "UPDATE counters SET count = count - 1 WHERE name = ? AND window_start = ? AND count > 0", shard, start)
		if err != nil {
			return err
		}
		if n, _ := r.RowsAffected(); n == 1 {
			return nil
		}
	}
	return nil
}
