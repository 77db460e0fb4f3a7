package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
)

// Message states as stored in chat_records.state; the numbers are those of
// the relay protocol's MessageState enum (proto/phonebook/relay/v1).
const (
	MsgDelivered    = 1
	MsgSMSSubmitted = 2
	MsgSMSDelivered = 3
	MsgFailed       = 4
	MsgStored       = 5
	MsgSMSQueued    = 6
	MsgMMSQueued    = 7
	MsgMMSSubmitted = 8
	MsgMMSDelivered = 9
)

// stateOrder is the order a stored message's states follow: an MMS first
// when there is one, then the SMS that may replace it, then an outcome,
// and an IM delivery (at a later login) above everything. FAILED ranks
// below the handset's delivery reports: a report of delivery is the
// stronger evidence, and a FAILED that comes after one is a late echo.
// A state ranked below the record's is old news and is not written.
var stateOrder = [][]int{
	{MsgStored},
	{MsgMMSQueued},
	{MsgMMSSubmitted},
	{MsgSMSQueued},
	{MsgSMSSubmitted},
	{MsgFailed},
	{MsgSMSDelivered, MsgMMSDelivered},
	{MsgDelivered},
}

// stateRank is an SQL expression giving column's rank in stateOrder.
func stateRank(column string) string {
	var b strings.Builder
	b.WriteString("CASE " + column)
	for rank, states := range stateOrder {
		for _, st := range states {
			fmt.Fprintf(&b, " WHEN %d THEN %d", st, rank)
		}
	}
	b.WriteString(" ELSE -1 END")
	return b.String()
}

var stateRankSQL = stateRank("state")

// StateRank reports where state comes in the order a message's states
// follow (see SetMessageState), and false for a state outside it.
func StateRank(state int) (int, bool) {
	for rank, states := range stateOrder {
		if slices.Contains(states, state) {
			return rank, true
		}
	}
	return 0, false
}

// Message is one IM message the relay accepted and must not lose.
type Message struct {
	Seq         int64 // offline order, assigned by the store
	ID          string
	Sender      phonebook.MSISDN
	ClientMsgID string
	Recipient   phonebook.MSISDN
	Type        int
	Text        string
	Media       []MessageMedia // what it carries besides text (the text is then the caption)
	SentAt      time.Time
	ViaSMS      bool
	SMSDueAt    time.Time // zero: no SMS fallback scheduled
	SMSAttempts int       // SMS fallback attempts claimed so far
}

// ChatRecord is a row of the chat record table: what was said, by whom, to
// whom, when, and how it travelled.
type ChatRecord struct {
	ID          string
	Sender      phonebook.MSISDN
	ClientMsgID string
	Receiver    phonebook.MSISDN
	Content     string
	Media       []MessageMedia
	Type        int
	SentAt      time.Time
	ReceivedAt  time.Time // zero until the recipient acknowledged it
	Offline     bool
	ViaSMS      bool
	State       int
}

// MessageMedia is one medium a message carries (media/, relay
// MediaRef), kept with the stored message and its chat record as JSON.
type MessageMedia struct {
	ID          string `json:"id"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
	Name        string `json:"name,omitempty"`
	Width       int    `json:"width,omitempty"`
	Height      int    `json:"height,omitempty"`
	Thumbnail   bool   `json:"thumbnail,omitempty"`
}

// encodeMedia is the media column's value: NULL for a text message.
func encodeMedia(ms []MessageMedia) any {
	if len(ms) == 0 {
		return nil
	}
	b, _ := json.Marshal(ms)
	return string(b)
}

func decodeMedia(s sql.NullString) ([]MessageMedia, error) {
	if !s.Valid || s.String == "" {
		return nil, nil
	}
	var ms []MessageMedia
	if err := json.Unmarshal([]byte(s.String), &ms); err != nil {
		return nil, fmt.Errorf("store: media column: %w", err)
	}
	return ms, nil
}

// StoreResult tells what StoreMessages did with one message.
type StoreResult struct {
	ID        string // the stored message's id: the caller's, or the earlier one for a duplicate
	State     int
	Duplicate bool // the sender had already sent this client_msg_id
}

// AckedMessage is an offline message its recipient acknowledged.
type AckedMessage struct {
	ID          string
	Sender      phonebook.MSISDN
	ClientMsgID string
}

func nullMicros(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMicro()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (d *DB) insertIgnore() string {
	if d.dialect == MySQL {
		return "INSERT IGNORE INTO"
	}
	return "INSERT OR IGNORE INTO"
}

// StoreMessages durably stores messages for offline delivery, all in one
// transaction (the relay's group commit), and records each in the chat
// record table. A message whose (sender, client_msg_id) is already recorded
// is not stored again: its result carries the earlier id and state.
func (d *DB) StoreMessages(ctx context.Context, msgs []Message) ([]StoreResult, error) {
	res := make([]StoreResult, len(msgs))
	err := d.tx(ctx, func(tx *sql.Tx) error {
		rec, err := tx.PrepareContext(ctx, d.insertIgnore()+` chat_records
			(id, sender, client_msg_id, receiver, content, media, type, sent_at, offline, via_sms, state)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`)
		if err != nil {
			return err
		}
		defer rec.Close()
		off, err := tx.PrepareContext(ctx, `INSERT INTO offline_messages
			(id, sender, client_msg_id, recipient, type, text, media, sent_at, via_sms, sms_due_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer off.Close()
		for i, m := range msgs {
			media := encodeMedia(m.Media)
			r, err := rec.ExecContext(ctx, m.ID, string(m.Sender), m.ClientMsgID, string(m.Recipient), m.Text, media, m.Type,
				micros(m.SentAt), b2i(m.ViaSMS), MsgStored)
			if err != nil {
				return err
			}
			if n, err := r.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				res[i].Duplicate = true
				if err := tx.QueryRowContext(ctx, "SELECT id, state FROM chat_records WHERE sender = ? AND client_msg_id = ?",
					string(m.Sender), m.ClientMsgID).Scan(&res[i].ID, &res[i].State); err != nil {
					return formatError(err)
				}
				continue
			}
			if _, err := off.ExecContext(ctx, m.ID, string(m.Sender), m.ClientMsgID, string(m.Recipient), m.Type, m.Text,
				media, micros(m.SentAt), b2i(m.ViaSMS), nullMicros(m.SMSDueAt)); err != nil {
				return formatError(err)
			}
			res[i] = StoreResult{ID: m.ID, State: MsgStored}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// recordChunk is how many rows one INSERT statement of RecordMessages
// carries: per-statement overhead dominates single-row inserts.
const recordChunk = 64

// RecordMessages writes chat records of messages delivered straight to an
// online recipient, in one transaction. Records already present (a retried
// batch) are left as they are.
func (d *DB) RecordMessages(ctx context.Context, recs []ChatRecord) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		var full *sql.Stmt
		args := make([]any, 0, 12*recordChunk)
		for len(recs) > 0 {
			n := min(len(recs), recordChunk)
			args = args[:0]
			for _, r := range recs[:n] {
				// int64, not int: database/sql converts other integer
				// types by reflection, an allocation per value.
				args = append(args, r.ID, string(r.Sender), r.ClientMsgID, string(r.Receiver), r.Content, encodeMedia(r.Media), int64(r.Type),
					micros(r.SentAt), nullMicros(r.ReceivedAt), int64(b2i(r.Offline)), int64(b2i(r.ViaSMS)), int64(r.State))
			}
			q := d.insertIgnore() + ` chat_records
				(id, sender, client_msg_id, receiver, content, media, type, sent_at, received_at, offline, via_sms, state) VALUES ` +
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?),", n), ",")
			var err error
			if n == recordChunk {
				if full == nil {
					if full, err = tx.PrepareContext(ctx, q); err != nil {
						return err
					}
					defer full.Close()
				}
				_, err = full.ExecContext(ctx, args...)
			} else {
				_, err = tx.ExecContext(ctx, q, args...)
			}
			if err != nil {
				return err
			}
			recs = recs[n:]
		}
		return nil
	})
}

const messageCols = `seq, id, sender, client_msg_id, recipient, type, text, media, sent_at, via_sms, sms_due_at, sms_attempts`

func scanMessages(rows *sql.Rows) ([]Message, error) {
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var sentAt int64
		var viaSMS int
		var due sql.NullInt64
		var media sql.NullString
		if err := rows.Scan(&m.Seq, &m.ID, &m.Sender, &m.ClientMsgID, &m.Recipient, &m.Type, &m.Text, &media,
			&sentAt, &viaSMS, &due, &m.SMSAttempts); err != nil {
			return nil, err
		}
		var err error
		if m.Media, err = decodeMedia(media); err != nil {
			return nil, err
		}
		m.SentAt = fromMicros(sentAt)
		m.ViaSMS = viaSMS != 0
		if due.Valid {
			m.SMSDueAt = fromMicros(due.Int64)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// OfflineMessages returns up to limit stored messages for recipient with
// seq > afterSeq, oldest first.
func (d *DB) OfflineMessages(ctx context.Context, recipient phonebook.MSISDN, afterSeq int64, limit int) ([]Message, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+messageCols+
		" FROM offline_messages WHERE recipient = ? AND seq > ? ORDER BY seq LIMIT ?", string(recipient), afterSeq, limit)
	if err != nil {
		return nil, err
	}
	return scanMessages(rows)
}

// AckMessages deletes offline messages their recipient acknowledged and
// marks their chat records delivered, in one transaction. Ids that are not
// stored for that recipient are skipped (already acknowledged, or not
// theirs). It returns the messages it acknowledged.
func (d *DB) AckMessages(ctx context.Context, recipient phonebook.MSISDN, ids []string, at time.Time) ([]AckedMessage, error) {
	var out []AckedMessage
	err := d.tx(ctx, func(tx *sql.Tx) error {
		out = out[:0]
		for _, id := range ids {
			r, err := tx.ExecContext(ctx, "DELETE FROM offline_messages WHERE id = ? AND recipient = ?", id, string(recipient))
			if err != nil {
				return err
			}
			if n, _ := r.RowsAffected(); n == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, "UPDATE chat_records SET state = ?, received_at = ? WHERE id = ?",
				MsgDelivered, micros(at), id); err != nil {
				return err
			}
			a := AckedMessage{ID: id}
			if err := tx.QueryRowContext(ctx, "SELECT sender, client_msg_id FROM chat_records WHERE id = ?", id).
				Scan(&a.Sender, &a.ClientMsgID); err != nil {
				return formatError(err)
			}
			out = append(out, a)
		}
		return nil
	})
	return out, err
}

// DueSMS returns up to limit stored messages whose SMS fallback is due at
// now, earliest first, and at most perSender of any one sender, so that a
// sender with a long backlog cannot delay everybody else's fallbacks.
func (d *DB) DueSMS(ctx context.Context, now time.Time, perSender, limit int) ([]Message, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+messageCols+" FROM (SELECT "+messageCols+
		", ROW_NUMBER() OVER (PARTITION BY sender ORDER BY sms_due_at, seq) AS rn"+
		" FROM offline_messages WHERE sms_due_at IS NOT NULL AND sms_due_at <= ?) due"+
		" WHERE rn <= ? ORDER BY sms_due_at, seq LIMIT ?", micros(now), perSender, limit)
	if err != nil {
		return nil, err
	}
	return scanMessages(rows)
}

// ClaimFallback takes a due SMS fallback for this caller: it moves the due time
// from due to retryAt, and counts an attempt, only if no one else has
// (another node's sweeper, or an earlier pass). It reports whether the
// caller now owns the attempt.
func (d *DB) ClaimFallback(ctx context.Context, id string, due, retryAt time.Time) (bool, error) {
	r, err := d.db.ExecContext(ctx, "UPDATE offline_messages SET sms_due_at = ?, sms_attempts = sms_attempts + 1 WHERE id = ? AND sms_due_at = ?",
		micros(retryAt), id, micros(due))
	if err != nil {
		return false, err
	}
	n, err := r.RowsAffected()
	return n == 1, err
}

// MarkFallbackQueued records that a stored message went to the SMS or MMS
// outbox (state is MsgSMSQueued or MsgMMSQueued): no more fallback is due,
// its later IM delivery is flagged via_sms, and its record says state
// unless it has moved on (the outbox already reported a newer state, or
// the recipient acknowledged it). It returns the record as it is now.
func (d *DB) MarkFallbackQueued(ctx context.Context, id string, state int) (ChatRecord, error) {
	if state != MsgSMSQueued && state != MsgMMSQueued {
		return ChatRecord{}, phonebook.Errorf(phonebook.EInvalid, "%d is not a queued state", state)
	}
	err := d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE offline_messages SET via_sms = 1, sms_due_at = NULL WHERE id = ?", id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE chat_records SET via_sms = 1, state = CASE WHEN state = ? THEN ? ELSE state END WHERE id = ?",
			MsgStored, state, id)
		return err
	})
	if err != nil {
		return ChatRecord{}, err
	}
	return d.ChatRecord(ctx, id)
}

// SetMessageState records an SMS or MMS state change reported by an outbox
// and returns the record as it is now. States only move forward (see
// stateOrder): a change that arrives after a newer one (a delivery report
// applied before the submit it follows was told, on this node or
// another) leaves the record as it is, and the record returned then
// shows the newer state; callers compare to know whether their change
// took. A message its recipient already acknowledged over IM stays
// delivered. Unknown ids are ENotFound; a state outside the order is
// EInvalid.
func (d *DB) SetMessageState(ctx context.Context, id string, state int) (ChatRecord, error) {
	rank, ok := StateRank(state)
	if !ok {
		return ChatRecord{}, phonebook.Errorf(phonebook.EInvalid, "%d is not a message state", state)
	}
	if _, err := d.db.ExecContext(ctx, "UPDATE chat_records SET state = ? WHERE id = ? AND "+stateRankSQL+" <= ?", state, id, rank); err != nil {
		return ChatRecord{}, err
	}
	return d.ChatRecord(ctx, id)
}

const recordCols = `id, sender, client_msg_id, receiver, content, media, type, sent_at, received_at, offline, via_sms, state`

func scanRecord(sc interface{ Scan(...any) error }) (ChatRecord, error) {
	var r ChatRecord
	var sent int64
	var recv sql.NullInt64
	var offline, viaSMS int
	var media sql.NullString
	if err := sc.Scan(&r.ID, &r.Sender, &r.ClientMsgID, &r.Receiver, &r.Content, &media, &r.Type, &sent, &recv, &offline, &viaSMS, &r.State); err != nil {
		return ChatRecord{}, formatError(err)
	}
	var err error
	if r.Media, err = decodeMedia(media); err != nil {
		return ChatRecord{}, err
	}
	r.SentAt = fromMicros(sent)
	if recv.Valid {
		r.ReceivedAt = fromMicros(recv.Int64)
	}
	r.Offline, r.ViaSMS = offline != 0, viaSMS != 0
	return r, nil
}

// ChatRecord returns one chat record by message id.
func (d *DB) ChatRecord(ctx context.Context, id string) (ChatRecord, error) {
	return scanRecord(d.db.QueryRowContext(ctx, "SELECT "+recordCols+" FROM chat_records WHERE id = ?", id))
}

// ChatRecordByClientID returns the record of a sender's client_msg_id.
func (d *DB) ChatRecordByClientID(ctx context.Context, sender phonebook.MSISDN, clientMsgID string) (ChatRecord, error) {
	return scanRecord(d.db.QueryRowContext(ctx, "SELECT "+recordCols+" FROM chat_records WHERE sender = ? AND client_msg_id = ?",
		string(sender), clientMsgID))
}

// ChatHistory returns up to limit records sent to or by number before the
// given time (zero: now), newest first.
func (d *DB) ChatHistory(ctx context.Context, number phonebook.MSISDN, before time.Time, limit int) ([]ChatRecord, error) {
	if before.IsZero() {
		before = now().Add(time.Microsecond)
	}
	rows, err := d.db.QueryContext(ctx, "SELECT "+recordCols+` FROM chat_records
		WHERE (sender = ? OR receiver = ?) AND sent_at < ? ORDER BY sent_at DESC, id LIMIT ?`,
		string(number), string(number), micros(before), limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ChatRecord
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// CountOfflineMessages returns how many messages wait for recipient.
func (d *DB) CountOfflineMessages(ctx context.Context, recipient phonebook.MSISDN) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM offline_messages WHERE recipient = ?", string(recipient)).Scan(&n)
	return n, err
}

// FailFallback ends a stored message's SMS fallback for good (it was
// refused: the recipient opted out, or had enough SMS today): no more
// fallback is due and the record says FAILED, unless the recipient already
// acknowledged it over IM. It returns the updated record.
func (d *DB) FailFallback(ctx context.Context, id string) (ChatRecord, error) {
	err := d.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "UPDATE offline_messages SET sms_due_at = NULL WHERE id = ?", id); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "UPDATE chat_records SET state = ? WHERE id = ? AND state <> ?", MsgFailed, id, MsgDelivered)
		return err
	})
	if err != nil {
		return ChatRecord{}, err
	}
	return d.ChatRecord(ctx, id)
}
