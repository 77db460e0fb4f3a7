package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"time"

	"github.com/phonebook/phonebook"
)

// SMSConversation is an IM user's (Sender) SMS thread with a number that
// has no client (Recipient): the fallback SMS go one way, replies the other.
type SMSConversation struct {
	Recipient  phonebook.MSISDN
	Sender     phonebook.MSISDN
	Ext        string    // the extension code of the thread; "" when it has none
	LastSentAt time.Time // the last fallback SMS
	LastUsedAt time.Time // the last fallback SMS or reply
}

// ErrExtensionsExhausted is returned by NoteSMSFallback when every
// extension code of the recipient belongs to a conversation used within
// the idle time.
var ErrExtensionsExhausted = errors.New("store: every extension code of the recipient is in a live conversation")

// maxExtensionAttempts bounds NoteSMSFallback's retries after losing a code
// to a concurrent allocation for the same recipient.
const maxExtensionAttempts = 64

// NoteSMSFallback records a fallback SMS from sender to recipient at at.
// With digits > 0 it returns the conversation's extension code of that many
// digits, allocating one when the conversation has none: the lowest free
// code, else the least recently used one if that was idle for at least
// idle (its conversation loses it); codes are unique per recipient. When
// every code is live it records the time all the same and returns
// ErrExtensionsExhausted. With digits 0 it only records the time and
// returns "".
func (d *DB) NoteSMSFallback(ctx context.Context, sender, recipient phonebook.MSISDN, digits int, idle time.Duration, at time.Time) (string, error) {
	if digits < 0 || digits > 8 {
		return "", fmt.Errorf("store: extension codes of %d digits (want 0 to 8)", digits)
	}
	var ext string
	var err error
	// Concurrent first SMS to one recipient from many senders race for the
	// lowest free code; each round has a winner, so the attempts bound how
	// many senders may start a conversation with one number at the same
	// moment. The jittered pause spreads the losers out.
	for attempt := 0; attempt < maxExtensionAttempts; attempt++ {
		if attempt > 0 {
			pause := time.Duration(1+mathrand.IntN(4*min(attempt, 8))) * time.Millisecond
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(pause):
			}
		}
		exhausted := false
		err = d.txRetry(ctx, func(tx *sql.Tx) error {
			ext = ""
			err := d.noteFallback(ctx, tx, sender, recipient, digits, idle, at, &ext)
			if exhausted = errors.Is(err, ErrExtensionsExhausted); exhausted {
				// The SMS goes from the bare short number: record it all
				// the same, for replies there.
				err = d.noteFallback(ctx, tx, sender, recipient, 0, idle, at, &ext)
			}
			return err
		})
		if err == nil && exhausted {
			return "", ErrExtensionsExhausted
		}
		// Two allocations for one recipient picked the same code: the
		// loser sees it taken next time.
		if phonebook.ErrorCode(err) != phonebook.EConflict {
			break
		}
	}
	return ext, err
}

func (d *DB) noteFallback(ctx context.Context, tx *sql.Tx, sender, recipient phonebook.MSISDN, digits int, idle time.Duration, at time.Time, ext *string) error {
	var cur sql.NullString
	err := tx.QueryRowContext(ctx, "SELECT ext FROM sms_conversations WHERE recipient = ? AND sender = ?"+d.forUpdate(),
		string(recipient), string(sender)).Scan(&cur)
	exists := err == nil
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	t := micros(at)
	if digits == 0 || cur.Valid && len(cur.String) == digits {
		if digits > 0 {
			*ext = cur.String
		}
		if exists {
			_, err = tx.ExecContext(ctx, "UPDATE sms_conversations SET last_sent_at = ?, last_used_at = ? WHERE recipient = ? AND sender = ?",
				t, t, string(recipient), string(sender))
			return err
		}
		_, err = tx.ExecContext(ctx, "INSERT INTO sms_conversations (recipient, sender, ext, last_sent_at, last_used_at) VALUES (?, ?, NULL, ?, ?)",
			string(recipient), string(sender), t, t)
		return err
	}
	rows, err := tx.QueryContext(ctx, "SELECT sender, ext, last_used_at FROM sms_conversations WHERE recipient = ? AND ext IS NOT NULL"+d.forUpdate(),
		string(recipient))
	if err != nil {
		return err
	}
	used := map[string]bool{}
	var lruSender, lruExt string
	var lruAt int64
	for rows.Next() {
		var s, e string
		var u int64
		if err := rows.Scan(&s, &e, &u); err != nil {
			rows.Close()
			return err
		}
		if len(e) != digits {
			continue // a code of another length: free to take over
		}
		used[e] = true
		if lruSender == "" || u < lruAt {
			lruSender, lruExt, lruAt = s, e, u
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	space := 1
	for range digits {
		space *= 10
	}
	code := ""
	for i := 0; i < space; i++ {
		if c := fmt.Sprintf("%0*d", digits, i); !used[c] {
			code = c
			break
		}
	}
	if code == "" {
		if lruAt > micros(at.Add(-idle)) {
			return ErrExtensionsExhausted
		}
		if _, err := tx.ExecContext(ctx, "UPDATE sms_conversations SET ext = NULL WHERE recipient = ? AND sender = ?",
			string(recipient), lruSender); err != nil {
			return err
		}
		code = lruExt
	}
	if exists {
		_, err = tx.ExecContext(ctx, "UPDATE sms_conversations SET ext = ?, last_sent_at = ?, last_used_at = ? WHERE recipient = ? AND sender = ?",
			code, t, t, string(recipient), string(sender))
	} else {
		_, err = tx.ExecContext(ctx, "INSERT INTO sms_conversations (recipient, sender, ext, last_sent_at, last_used_at) VALUES (?, ?, ?, ?, ?)",
			string(recipient), string(sender), code, t, t)
	}
	if err != nil {
		return err
	}
	*ext = code
	return nil
}

// SMSConversationByExt finds recipient's conversation holding extension
// code ext and marks it used at at (to within touchEvery). found is false
// when no conversation of recipient holds the code.
func (d *DB) SMSConversationByExt(ctx context.Context, recipient phonebook.MSISDN, ext string, at time.Time) (c SMSConversation, found bool, err error) {
	var s string
	var sent, used int64
	err = d.db.QueryRowContext(ctx, "SELECT sender, last_sent_at, last_used_at FROM sms_conversations WHERE recipient = ? AND ext = ?",
		string(recipient), ext).Scan(&s, &sent, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return SMSConversation{}, false, nil
	}
	if err != nil {
		return SMSConversation{}, false, err
	}
	c = SMSConversation{Recipient: recipient, Sender: phonebook.MSISDN(s), Ext: ext, LastSentAt: fromMicros(sent), LastUsedAt: fromMicros(used)}
	if at.Sub(c.LastUsedAt) < touchEvery {
		return c, true, nil // idle times are hours or days: a write per reply buys nothing
	}
	return c, true, d.TouchSMSConversation(ctx, recipient, c.Sender, at)
}

// touchEvery is how stale a conversation's recorded last use may be: a
// reply within it of the last recorded use writes nothing.
const touchEvery = time.Minute

// TouchSMSConversation marks a conversation used at at (a reply came), to
// within touchEvery.
func (d *DB) TouchSMSConversation(ctx context.Context, recipient, sender phonebook.MSISDN, at time.Time) error {
	return d.execRetry(ctx, "UPDATE sms_conversations SET last_used_at = ? WHERE recipient = ? AND sender = ? AND last_used_at < ?",
		micros(at), string(recipient), string(sender), micros(at.Add(-touchEvery)))
}

// RecentSMSSenders lists the IM users who sent recipient a fallback SMS at
// since or later, most recent first, at most limit.
func (d *DB) RecentSMSSenders(ctx context.Context, recipient phonebook.MSISDN, since time.Time, limit int) ([]SMSConversation, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT sender, ext, last_sent_at, last_used_at FROM sms_conversations
		WHERE recipient = ? AND last_sent_at >= ? ORDER BY last_sent_at DESC, sender LIMIT ?`,
		string(recipient), micros(since), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SMSConversation
	for rows.Next() {
		var s string
		var e sql.NullString
		var sent, used int64
		if err := rows.Scan(&s, &e, &sent, &used); err != nil {
			return nil, err
		}
		out = append(out, SMSConversation{Recipient: recipient, Sender: phonebook.MSISDN(s), Ext: e.String,
			LastSentAt: fromMicros(sent), LastUsedAt: fromMicros(used)})
	}
	return out, rows.Err()
}

// SMSOptOut is a number's refusal of fallback SMS, from every sender
// (Sender "") or from one.
type SMSOptOut struct {
	Number    phonebook.MSISDN `json:"number"`
	Sender    phonebook.MSISDN `json:"sender,omitempty"`
	CreatedAt time.Time        `json:"created_at"`
}

// AddSMSOptOut records that number takes no fallback SMS from sender
// ("" = from anyone). It reports whether the opt-out is new.
func (d *DB) AddSMSOptOut(ctx context.Context, number, sender phonebook.MSISDN, at time.Time) (bool, error) {
	var added bool
	err := d.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, d.insertIgnore()+" sms_optouts (number, sender, created_at) VALUES (?, ?, ?)",
			string(number), string(sender), micros(at))
		if err != nil {
			return err
		}
		n, err := r.RowsAffected()
		added = n > 0
		return err
	})
	return added, err
}

// RemoveSMSOptOut lifts number's opt-out from sender ("" = the one from
// anyone); with all, every opt-out of number. It returns how many went.
func (d *DB) RemoveSMSOptOut(ctx context.Context, number, sender phonebook.MSISDN, all bool) (int64, error) {
	q, args := "DELETE FROM sms_optouts WHERE number = ? AND sender = ?", []any{string(number), string(sender)}
	if all {
		q, args = "DELETE FROM sms_optouts WHERE number = ?", []any{string(number)}
	}
	r, err := d.db.ExecContext(ctx, q, args...)
	if err != nil {
		return 0, formatError(err)
	}
	return r.RowsAffected()
}

// SMSOptedOut reports whether number refuses fallback SMS from sender:
// from anyone, or from sender in particular.
func (d *DB) SMSOptedOut(ctx context.Context, number, sender phonebook.MSISDN) (bool, error) {
	var one int
	err := d.db.QueryRowContext(ctx, "SELECT 1 FROM sms_optouts WHERE number = ? AND sender IN ('', ?) LIMIT 1",
		string(number), string(sender)).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// SMSOptOuts lists opt-outs, of number only when it is not "", oldest
// first, at most limit.
func (d *DB) SMSOptOuts(ctx context.Context, number phonebook.MSISDN, limit int) ([]SMSOptOut, error) {
	q, args := "SELECT number, sender, created_at FROM sms_optouts ORDER BY created_at, number, sender LIMIT ?", []any{limit}
	if number != "" {
		q, args = "SELECT number, sender, created_at FROM sms_optouts WHERE number = ? ORDER BY created_at, sender LIMIT ?", []any{string(number), limit}
	}
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SMSOptOut
	for rows.Next() {
		var n, s string
		var at int64
		if err := rows.Scan(&n, &s, &at); err != nil {
			return nil, err
		}
		out = append(out, SMSOptOut{Number: phonebook.MSISDN(n), Sender: phonebook.MSISDN(s), CreatedAt: fromMicros(at)})
	}
	return out, rows.Err()
}
