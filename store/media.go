package store

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
)

// Media is one uploaded medium's metadata (media/); its body lives in the
// media blob store under ID.
type Media struct {
	ID          string
	Owner       phonebook.MSISDN
	ContentType string
	Size        int64
	SHA256      string
	Name        string
	Width       int
	Height      int
	Thumbnail   bool
	Created     time.Time
	Expires     time.Time
}

// MediaLink is a short link an SMS carries in place of media: TokenHash
// is the SHA-256 (hex) of the link's token.
type MediaLink struct {
	TokenHash string
	MessageID string
	Recipient phonebook.MSISDN
	MediaIDs  []string
	Created   time.Time
	Expires   time.Time
}

const mediaCols = `id, owner, content_type, size, sha256, name, width, height, thumbnail, created, expires`

func scanMedia(sc interface{ Scan(...any) error }) (Media, error) {
	var m Media
	var thumb int
	var created, expires int64
	err := sc.Scan(&m.ID, &m.Owner, &m.ContentType, &m.Size, &m.SHA256, &m.Name, &m.Width, &m.Height, &thumb, &created, &expires)
	m.Thumbnail = thumb != 0
	m.Created, m.Expires = time.UnixMicro(created).UTC(), time.UnixMicro(expires).UTC()
	return m, err
}

// CreateMedia records an uploaded medium.
func (d *DB) CreateMedia(ctx context.Context, m Media) error {
	return d.execRetry(ctx, `INSERT INTO media (`+mediaCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		m.ID, string(m.Owner), m.ContentType, m.Size, m.SHA256, m.Name, m.Width, m.Height, b2i(m.Thumbnail),
		micros(m.Created), micros(m.Expires))
}

// Media returns one medium's metadata (ENotFound when there is none).
func (d *DB) Media(ctx context.Context, id string) (Media, error) {
	m, err := scanMedia(d.db.QueryRowContext(ctx, `SELECT `+mediaCols+` FROM media WHERE id = ?`, id))
	return m, formatError(err)
}

// AttachMedia records that message msgID carries media ids from sender to
// recipient, who may read them until until; each medium then lives at
// least until until. Every id must be sender's and not expired at now:
// otherwise nothing is recorded and the error (ENotFound) names the first
// id that is not. It returns the media in the order of ids. Attaching
// again for the same message changes nothing but until.
func (d *DB) AttachMedia(ctx context.Context, msgID string, sender, recipient phonebook.MSISDN, ids []string, now, until time.Time) ([]Media, error) {
	out := make([]Media, len(ids))
	err := d.tx(ctx, func(tx *sql.Tx) error {
		for i, id := range ids {
			m, err := scanMedia(tx.QueryRowContext(ctx, `SELECT `+mediaCols+` FROM media WHERE id = ?`+d.forUpdate(), id))
			if err == sql.ErrNoRows || err == nil && (m.Owner != sender || !m.Expires.After(now)) {
				return phonebook.Errorf(phonebook.ENotFound, "media %q: no such upload of yours (uploads expire when no message carries them)", id)
			}
			if err != nil {
				return err
			}
			if until.After(m.Expires) {
				if _, err := tx.ExecContext(ctx, `UPDATE media SET expires = ? WHERE id = ?`, micros(until), id); err != nil {
					return err
				}
				m.Expires = until
			}
			if _, err := tx.ExecContext(ctx, d.insertIgnore()+` media_refs (media_id, message_id, recipient, until) VALUES (?, ?, ?, ?)`,
				id, msgID, string(recipient), micros(until)); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE media_refs SET until = ? WHERE media_id = ? AND message_id = ? AND until < ?`,
				micros(until), id, msgID, micros(until)); err != nil {
				return err
			}
			out[i] = m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// MediaReadable reports whether reader may read medium id at now: it
// uploaded it, or a message carried it to reader and that reference has
// not run out. A medium that has expired is readable by nobody.
func (d *DB) MediaReadable(ctx context.Context, id string, reader phonebook.MSISDN, now time.Time) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE id = ? AND expires > ? AND (owner = ?
		OR EXISTS (SELECT 1 FROM media_refs WHERE media_id = ? AND recipient = ? AND until > ?))`,
		id, micros(now), string(reader), id, string(reader), micros(now)).Scan(&n)
	return n > 0, formatError(err)
}

// CreateMediaLink records a link; every medium it names lives at least
// until the link expires.
func (d *DB) CreateMediaLink(ctx context.Context, l MediaLink) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		for _, id := range l.MediaIDs {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE id = ?`, id).Scan(&n); err != nil {
				return err
			}
			if n == 0 {
				return phonebook.Errorf(phonebook.ENotFound, "media %q: no such media", id)
			}
			if _, err := tx.ExecContext(ctx, `UPDATE media SET expires = ? WHERE id = ? AND expires < ?`,
				micros(l.Expires), id, micros(l.Expires)); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO media_links (token_hash, message_id, recipient, media_ids, created, expires)
			VALUES (?, ?, ?, ?, ?, ?)`, l.TokenHash, l.MessageID, string(l.Recipient), strings.Join(l.MediaIDs, " "),
			micros(l.Created), micros(l.Expires))
		return err
	})
}

// MediaLink returns the link whose token hashes to tokenHash (ENotFound
// when there is none; the caller checks Expires).
func (d *DB) MediaLink(ctx context.Context, tokenHash string) (MediaLink, error) {
	var l MediaLink
	var ids string
	var created, expires int64
	err := d.db.QueryRowContext(ctx, `SELECT token_hash, message_id, recipient, media_ids, created, expires
		FROM media_links WHERE token_hash = ?`, tokenHash).Scan(&l.TokenHash, &l.MessageID, &l.Recipient, &ids, &created, &expires)
	if err != nil {
		return MediaLink{}, formatError(err)
	}
	l.MediaIDs = strings.Fields(ids)
	l.Created, l.Expires = time.UnixMicro(created).UTC(), time.UnixMicro(expires).UTC()
	return l, nil
}

// ExpiredMedia returns up to limit media whose time has passed at now
// (the janitor deletes their bodies, then DeleteMedia).
func (d *DB) ExpiredMedia(ctx context.Context, now time.Time, limit int) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT id FROM media WHERE expires <= ? ORDER BY expires LIMIT ?`, micros(now), limit)
	if err != nil {
		return nil, formatError(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// DeleteMedia forgets media ids (still expired at now: one that a message
// attached meanwhile stays) with their references, and every link that
// has expired at now. It returns the ids it deleted.
func (d *DB) DeleteMedia(ctx context.Context, ids []string, now time.Time) ([]string, error) {
	var deleted []string
	err := d.tx(ctx, func(tx *sql.Tx) error {
		deleted = deleted[:0]
		for _, id := range ids {
			res, err := tx.ExecContext(ctx, `DELETE FROM media WHERE id = ? AND expires <= ?`, id, micros(now))
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM media_refs WHERE media_id = ?`, id); err != nil {
				return err
			}
			deleted = append(deleted, id)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM media_links WHERE expires <= ?`, micros(now))
		return err
	})
	return deleted, err
}

// CountMedia is how many media owner has uploaded since since, and their
// bytes (for quotas and the console).
func (d *DB) CountMedia(ctx context.Context, owner phonebook.MSISDN, since time.Time) (n, bytes int64, err error) {
	err = d.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM media WHERE owner = ? AND created >= ?`,
		string(owner), micros(since)).Scan(&n, &bytes)
	return n, bytes, formatError(err)
}
