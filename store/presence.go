package store

import (
	"context"
	"database/sql"
	"time"

	"github.com/phonebook/phonebook"
)

// StatusOffline is the IM status of a user with no connection, and of a user
// the server has never seen connect.
const StatusOffline = "offline"

// Status is a user's row of the patent's status table: IM status, self-set
// text, phone-operation activity and personal details.
type Status struct {
	Number     phonebook.MSISDN
	IMStatus   string
	StatusText string
	Activity   string
	Nickname   string
	Signature  string
	Site       string
	Visibility string // "" = the server default
	UpdatedAt  time.Time
}

// StatusUpdate changes the fields that are not nil. With IMStatusIfOffline,
// IMStatus applies only when the user is offline now (logging in must not
// overwrite "busy" set by a still-connected session on another node).
type StatusUpdate struct {
	IMStatus          *string
	IMStatusIfOffline bool
	StatusText        *string
	Activity          *string
	Nickname          *string
	Signature         *string
	Site              *string
	Visibility        *string
}

func (u StatusUpdate) apply(s Status) Status {
	if u.IMStatus != nil && (!u.IMStatusIfOffline || s.IMStatus == StatusOffline) {
		s.IMStatus = *u.IMStatus
	}
	for _, f := range []struct {
		v   *string
		dst *string
	}{{u.StatusText, &s.StatusText}, {u.Activity, &s.Activity}, {u.Nickname, &s.Nickname},
		{u.Signature, &s.Signature}, {u.Site, &s.Site}, {u.Visibility, &s.Visibility}} {
		if f.v != nil {
			*f.dst = *f.v
		}
	}
	return s
}

func statusCols(alias string) string {
	p := alias + "."
	return p + "number, " + p + "im_status, " + p + "status_text, " + p + "activity, " + p + "nickname, " +
		p + "signature, " + p + "site, " + p + "visibility, " + p + "updated_at"
}

// nullStatus scans a LEFT JOINed status row.
type nullStatus struct {
	number, im, text, activity, nick, sig, site, vis sql.NullString
	at                                               sql.NullInt64
}

func (n *nullStatus) dest() []any {
	return []any{&n.number, &n.im, &n.text, &n.activity, &n.nick, &n.sig, &n.site, &n.vis, &n.at}
}

func (n *nullStatus) status() *Status {
	if !n.number.Valid {
		return nil
	}
	return &Status{Number: phonebook.MSISDN(n.number.String), IMStatus: n.im.String, StatusText: n.text.String,
		Activity: n.activity.String, Nickname: n.nick.String, Signature: n.sig.String, Site: n.site.String,
		Visibility: n.vis.String, UpdatedAt: time.UnixMicro(n.at.Int64).UTC()}
}

// UserStatus returns the user's status; a user never seen is offline.
func (d *DB) UserStatus(ctx context.Context, number phonebook.MSISDN) (Status, error) {
	return d.userStatus(ctx, d.db, number, "")
}

func (d *DB) userStatus(ctx context.Context, q querier, number phonebook.MSISDN, suffix string) (Status, error) {
	rows, err := q.QueryContext(ctx, "SELECT "+statusCols("s")+" FROM user_status s WHERE s.number = ?"+suffix, number)
	if err != nil {
		return Status{}, err
	}
	defer rows.Close()
	if !rows.Next() {
		return Status{Number: number, IMStatus: StatusOffline}, rows.Err()
	}
	var n nullStatus
	if err := rows.Scan(n.dest()...); err != nil {
		return Status{}, err
	}
	return *n.status(), nil
}

// UpdateStatus applies a partial update and returns the new status and
// whether anything changed.
func (d *DB) UpdateStatus(ctx context.Context, number phonebook.MSISDN, u StatusUpdate) (Status, bool, error) {
	var st Status
	var changed bool
	err := d.retryTx(ctx, func(tx *sql.Tx) error {
		lock := ""
		if d.dialect == MySQL {
			lock = " FOR UPDATE"
		}
		cur, err := d.userStatus(ctx, tx, number, lock)
		if err != nil {
			return err
		}
		next := u.apply(cur)
		next.UpdatedAt = cur.UpdatedAt
		if changed = next != cur; !changed {
			st = cur
			return nil
		}
		next.UpdatedAt = now()
		st = next
		q := `INSERT INTO user_status (number, im_status, status_text, activity, nickname, signature, site, visibility, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) `
		if d.dialect == MySQL {
			q += `ON DUPLICATE KEY UPDATE im_status = VALUES(im_status), status_text = VALUES(status_text),
				activity = VALUES(activity), nickname = VALUES(nickname), signature = VALUES(signature),
				site = VALUES(site), visibility = VALUES(visibility), updated_at = VALUES(updated_at)`
		} else {
			q += `ON CONFLICT (number) DO UPDATE SET im_status = excluded.im_status, status_text = excluded.status_text,
				activity = excluded.activity, nickname = excluded.nickname, signature = excluded.signature,
				site = excluded.site, visibility = excluded.visibility, updated_at = excluded.updated_at`
		}
		_, err = tx.ExecContext(ctx, q, number, next.IMStatus, next.StatusText, next.Activity, next.Nickname,
			next.Signature, next.Site, next.Visibility, next.UpdatedAt.UnixMicro())
		return err
	})
	return st, changed, err
}

// ContactStatus is the status of one of the owner's registered contacts and
// the owner's flag for them.
type ContactStatus struct {
	Flag   int
	Status Status
}

// ContactStatuses returns the status of every registered contact of the
// owner that has a status row: one indexed range scan plus key lookups.
func (d *DB) ContactStatuses(ctx context.Context, owner phonebook.MSISDN) ([]ContactStatus, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT c.flag, `+statusCols("s")+`
		FROM contacts c JOIN user_status s ON s.number = c.contact JOIN users u ON u.number = c.contact AND u.valid = 1
		WHERE c.owner = ? ORDER BY c.contact`, owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ContactStatus
	for rows.Next() {
		var cs ContactStatus
		var n nullStatus
		if err := rows.Scan(append([]any{&cs.Flag}, n.dest()...)...); err != nil {
			return nil, err
		}
		cs.Status = *n.status()
		out = append(out, cs)
	}
	return out, rows.Err()
}
