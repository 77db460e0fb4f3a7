package store

import "context"

// ResetOnline marks every user offline and clears their activity, as the
// relay would have at logout. A single-node server calls it at start: after
// a crash nobody is connected, yet users would otherwise look online to
// their contacts until they next log in and out. It returns how many users
// it changed. (A cluster must not: other nodes hold connections.)
func (d *DB) ResetOnline(ctx context.Context) (int64, error) {
	res, err := d.db.ExecContext(ctx, "UPDATE user_status SET im_status = ?, activity = '', updated_at = ? WHERE im_status <> ?",
		StatusOffline, now().UnixMicro(), StatusOffline)
	if err != nil {
		return 0, formatError(err)
	}
	return res.RowsAffected()
}
