package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/phonebook/phonebook"
)

// Contact flags, as in the patent's contact table.
const (
	FlagOneWay = 1 // the other side has not added me
	FlagMutual = 2 // both have each other
)

// BookEntry is one card of an owner's address book, as the phone wrote it.
type BookEntry struct {
	EntryID string
	Name    string
	Group   string
	Phones  []BookPhone

	created int64 // kept when an edit rewrites the entry
}

// BookPhone is one phone of a card. Number is the normalised form, "" when
// Raw is not a valid number (kept for restore, never a contact).
type BookPhone struct {
	Raw    string
	Label  string
	Number phonebook.MSISDN
}

func (e BookEntry) equal(o BookEntry) bool {
	if e.Name != o.Name || e.Group != o.Group || len(e.Phones) != len(o.Phones) {
		return false
	}
	for i := range e.Phones {
		if e.Phones[i] != o.Phones[i] {
			return false
		}
	}
	return true
}

// BookChange is one sync: with Replace, Upsert is the whole new book;
// otherwise Upsert adds or replaces entries by id and Remove deletes ids.
type BookChange struct {
	Replace    bool
	Upsert     []BookEntry
	Remove     []string
	MaxEntries int // the book may not grow beyond this; 0 = no limit
	Budget     LookupBudget
}

// BookApplied says what a sync changed in the owner's contact list.
type BookApplied struct {
	Added     []phonebook.MSISDN       // numbers new to the contact list
	Removed   []phonebook.MSISDN       // numbers no longer in the book
	NewMutual []phonebook.MSISDN       // added numbers whose owner already had me
	Flags     map[phonebook.MSISDN]int // the owner's flag for every contact now
	Contacts  int                      // distinct valid numbers in the book now
	Entries   int                      // entries in the book now
}

type contactRow struct {
	name, group string
	flag        int
}

// ApplyBookChange applies a sync to the owner's book and contact list in one
// transaction: it rewrites changed entries, inserts and deletes contact rows,
// keeps both sides' flags true, and charges the lookup budget for numbers
// new to the list. Over budget it changes nothing and returns ERateLimited.
func (d *DB) ApplyBookChange(ctx context.Context, owner phonebook.MSISDN, ch BookChange) (BookApplied, error) {
	var res BookApplied
	err := d.retryTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = d.applyBookChange(ctx, tx, owner, ch)
		return err
	})
	return res, err
}

func (d *DB) applyBookChange(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN, ch BookChange) (BookApplied, error) {
	var res BookApplied
	t := now()
	// The budget row is the owner's lock: two syncs of one owner, from any
	// node, run one after the other.
	tokens, budgetAt, err := d.lockBudget(ctx, tx, owner, ch.Budget, t)
	if err != nil {
		return res, err
	}
	old, err := loadBook(ctx, tx, owner)
	if err != nil {
		return res, err
	}
	next := make(map[string]BookEntry, len(old)+len(ch.Upsert))
	if !ch.Replace {
		for id, e := range old {
			next[id] = e
		}
		for _, id := range ch.Remove {
			delete(next, id)
		}
	}
	for _, e := range ch.Upsert {
		next[e.EntryID] = e
	}
	if ch.MaxEntries > 0 && len(next) > ch.MaxEntries {
		return res, phonebook.Errorf(phonebook.EInvalid, "the address book would hold %d entries; the limit is %d", len(next), ch.MaxEntries)
	}

	var drop []string
	var write []BookEntry
	for id, e := range old {
		if n, ok := next[id]; !ok || !n.equal(e) {
			drop = append(drop, id)
		}
	}
	for id, e := range next {
		if o, ok := old[id]; !ok || !o.equal(e) {
			write = append(write, e)
		}
	}
	sort.Strings(drop)
	sort.Slice(write, func(i, j int) bool { return write[i].EntryID < write[j].EntryID })

	want := contactSet(owner, next)
	have, err := loadContacts(ctx, tx, owner)
	if err != nil {
		return res, err
	}
	var renamed []phonebook.MSISDN
	for n, w := range want {
		h, ok := have[n]
		switch {
		case !ok:
			res.Added = append(res.Added, n)
		case h.name != w.name || h.group != w.group:
			renamed = append(renamed, n)
		}
	}
	for n := range have {
		if _, ok := want[n]; !ok {
			res.Removed = append(res.Removed, n)
		}
	}
	sortNumbers(res.Added)
	sortNumbers(res.Removed)
	sortNumbers(renamed)

	if err := d.chargeBudget(ctx, tx, owner, ch.Budget, tokens, budgetAt, int64(len(res.Added)), t); err != nil {
		return res, err
	}
	if err := deleteEntries(ctx, tx, owner, drop); err != nil {
		return res, err
	}
	if err := d.insertEntries(ctx, tx, owner, write, old, t); err != nil {
		return res, err
	}
	if err := removeContacts(ctx, tx, owner, res.Removed, t); err != nil {
		return res, err
	}
	if res.NewMutual, err = d.addContacts(ctx, tx, owner, res.Added, want, t); err != nil {
		return res, err
	}
	for _, n := range renamed {
		w := want[n]
		if _, err := tx.ExecContext(ctx, "UPDATE contacts SET name = ?, group_name = ?, updated_at = ? WHERE owner = ? AND contact = ?",
			w.name, w.group, t.UnixMicro(), owner, n); err != nil {
			return res, err
		}
	}
	res.Flags = make(map[phonebook.MSISDN]int, len(want))
	for n := range want {
		res.Flags[n] = FlagOneWay
		if h, ok := have[n]; ok {
			res.Flags[n] = h.flag
		}
	}
	for _, n := range res.NewMutual {
		res.Flags[n] = FlagMutual
	}
	res.Contacts = len(want)
	res.Entries = len(next)
	return res, nil
}

// contactSet derives the contact list from a book: every distinct valid
// number except the owner's own, named after the entry with the smallest id
// that holds it, so the choice is stable across syncs.
func contactSet(owner phonebook.MSISDN, book map[string]BookEntry) map[phonebook.MSISDN]contactRow {
	ids := make([]string, 0, len(book))
	for id := range book {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make(map[phonebook.MSISDN]contactRow)
	for _, id := range ids {
		e := book[id]
		for _, p := range e.Phones {
			if p.Number == "" || p.Number == owner {
				continue
			}
			if _, ok := out[p.Number]; !ok {
				out[p.Number] = contactRow{name: e.Name, group: e.Group}
			}
		}
	}
	return out
}

func sortNumbers(ns []phonebook.MSISDN) {
	sort.Slice(ns, func(i, j int) bool { return ns[i] < ns[j] })
}

// bookPhone is a phone as stored in book_entries.phones.
type bookPhone struct {
	Raw    string  `json:"raw"`
	Label  string  `json:"label,omitempty"`
	Number *string `json:"number"`
}

func encodePhones(ps []BookPhone) (string, error) {
	out := make([]bookPhone, len(ps))
	for i, p := range ps {
		out[i] = bookPhone{Raw: p.Raw, Label: p.Label}
		if p.Number != "" {
			n := string(p.Number)
			out[i].Number = &n
		}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func decodePhones(s string) ([]BookPhone, error) {
	var in []bookPhone
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, fmt.Errorf("store: book entry phones: %w", err)
	}
	var out []BookPhone
	for _, p := range in {
		bp := BookPhone{Raw: p.Raw, Label: p.Label}
		if p.Number != nil {
			bp.Number = phonebook.MSISDN(*p.Number)
		}
		out = append(out, bp)
	}
	return out, nil
}

func loadBook(ctx context.Context, q querier, owner phonebook.MSISDN) (map[string]BookEntry, error) {
	book := make(map[string]BookEntry)
	rows, err := q.QueryContext(ctx, "SELECT entry_id, name, group_name, phones, created_at FROM book_entries WHERE owner = ?", owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var e BookEntry
		var phones string
		if err := rows.Scan(&e.EntryID, &e.Name, &e.Group, &phones, &e.created); err != nil {
			return nil, err
		}
		if e.Phones, err = decodePhones(phones); err != nil {
			return nil, err
		}
		book[e.EntryID] = e
	}
	return book, rows.Err()
}

func loadContacts(ctx context.Context, q querier, owner phonebook.MSISDN) (map[phonebook.MSISDN]contactRow, error) {
	rows, err := q.QueryContext(ctx, "SELECT contact, name, group_name, flag FROM contacts WHERE owner = ?", owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[phonebook.MSISDN]contactRow)
	for rows.Next() {
		var n phonebook.MSISDN
		var r contactRow
		if err := rows.Scan(&n, &r.name, &r.group, &r.flag); err != nil {
			return nil, err
		}
		out[n] = r
	}
	return out, rows.Err()
}

func deleteEntries(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN, ids []string) error {
	for _, part := range chunks(ids) {
		if _, err := tx.ExecContext(ctx, "DELETE FROM book_entries WHERE owner = ? AND entry_id IN ("+placeholders(len(part))+")",
			append([]any{owner}, anys(part)...)...); err != nil {
			return err
		}
	}
	return nil
}

// insertEntries writes entries with multi-row INSERTs; an entry rewritten by
// an edit keeps its original created_at.
func (d *DB) insertEntries(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN, es []BookEntry, old map[string]BookEntry, t time.Time) error {
	rows := make([][]any, 0, len(es))
	for _, e := range es {
		created := t.UnixMicro()
		if o, ok := old[e.EntryID]; ok {
			created = o.created
		}
		phones, err := encodePhones(e.Phones)
		if err != nil {
			return err
		}
		rows = append(rows, []any{owner, e.EntryID, e.Name, e.Group, phones, created, t.UnixMicro()})
	}
	return insertRows(ctx, tx, "book_entries (owner, entry_id, name, group_name, phones, created_at, updated_at)", rows)
}

// removeContacts deletes the owner's rows and turns the other sides' mutual
// flags back to one-way.
func removeContacts(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN, ns []phonebook.MSISDN, t time.Time) error {
	for _, part := range chunks(ns) {
		in := placeholders(len(part))
		if _, err := tx.ExecContext(ctx, "DELETE FROM contacts WHERE owner = ? AND contact IN ("+in+")",
			append([]any{owner}, anys(part)...)...); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE contacts SET flag = ?, updated_at = ? WHERE contact = ? AND flag = ? AND owner IN ("+in+")",
			append([]any{FlagOneWay, t.UnixMicro(), owner, FlagMutual}, anys(part)...)...); err != nil {
			return err
		}
	}
	return nil
}

// addContacts inserts the owner's new rows, then finds which of those
// numbers already have the owner (a locking read on MySQL, so two people
// adding each other at the same moment cannot both miss the other: one of
// the two transactions waits or deadlocks and is retried) and marks both
// sides mutual.
func (d *DB) addContacts(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN, ns []phonebook.MSISDN, want map[phonebook.MSISDN]contactRow, t time.Time) ([]phonebook.MSISDN, error) {
	var rows [][]any
	for _, n := range ns {
		w := want[n]
		rows = append(rows, []any{owner, n, w.name, w.group, t.UnixMicro(), t.UnixMicro(), FlagOneWay})
	}
	if err := insertRows(ctx, tx, "contacts (owner, contact, name, group_name, created_at, updated_at, flag)", rows); err != nil {
		return nil, err
	}
	// The reverse rows all sit under contact = owner in contacts_contact;
	// MySQL would otherwise probe the primary key once per number, at
	// random places in a large table.
	from, lock := "contacts INDEXED BY contacts_contact", ""
	if d.dialect == MySQL {
		from, lock = "contacts FORCE INDEX (contacts_contact)", " FOR UPDATE"
	}
	var mutual []phonebook.MSISDN
	for _, part := range chunks(ns) {
		found, err := queryNumbers(ctx, tx, "SELECT owner FROM "+from+" WHERE contact = ? AND owner IN ("+placeholders(len(part))+")"+lock,
			append([]any{owner}, anys(part)...)...)
		if err != nil {
			return nil, err
		}
		mutual = append(mutual, found...)
	}
	sortNumbers(mutual)
	for _, part := range chunks(mutual) {
		in := placeholders(len(part))
		if _, err := tx.ExecContext(ctx, "UPDATE contacts SET flag = ?, updated_at = ? WHERE contact = ? AND owner IN ("+in+")",
			append([]any{FlagMutual, t.UnixMicro(), owner}, anys(part)...)...); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, "UPDATE contacts SET flag = ?, updated_at = ? WHERE owner = ? AND contact IN ("+in+")",
			append([]any{FlagMutual, t.UnixMicro(), owner}, anys(part)...)...); err != nil {
			return nil, err
		}
	}
	return mutual, nil
}

// AddressBook returns the owner's book for restore, entries in id order and
// phones in the order the phone sent them.
func (d *DB) AddressBook(ctx context.Context, owner phonebook.MSISDN) ([]BookEntry, error) {
	book, err := loadBook(ctx, d.db, owner)
	if err != nil {
		return nil, err
	}
	out := make([]BookEntry, 0, len(book))
	for _, e := range book {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].EntryID < out[j].EntryID })
	return out, nil
}

// Contact is one row of an owner's contact list joined with what the server
// knows of the number.
type Contact struct {
	Number     phonebook.MSISDN
	Name       string
	Group      string
	Flag       int
	Registered bool    // a user with this number exists and is not blocked
	Status     *Status // nil when the user never had a status
}

// Contacts returns the owner's contact list, by number.
func (d *DB) Contacts(ctx context.Context, owner phonebook.MSISDN) ([]Contact, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT c.contact, c.name, c.group_name, c.flag, u.valid, `+statusCols("s")+`
		FROM contacts c LEFT JOIN users u ON u.number = c.contact LEFT JOIN user_status s ON s.number = c.contact
		WHERE c.owner = ? ORDER BY c.contact`, owner)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Contact
	for rows.Next() {
		var c Contact
		var valid sql.NullInt64
		var st nullStatus
		if err := rows.Scan(append([]any{&c.Number, &c.Name, &c.Group, &c.Flag, &valid}, st.dest()...)...); err != nil {
			return nil, err
		}
		c.Registered = valid.Valid && valid.Int64 == 1
		c.Status = st.status()
		out = append(out, c)
	}
	return out, rows.Err()
}

// Match is what the server knows of a registered number.
type Match struct {
	Status *Status // nil when the user never had a status
}

// matchChunk and matchParallel shape MatchNumbers: a 1,000-number book is
// four primary-key IN lookups run side by side, so the random reads of a
// users table bigger than the buffer pool overlap.
const (
	matchChunk    = 250
	matchParallel = 4
)

// MatchNumbers returns the registered (and not blocked) users among ns with
// their status; numbers absent from the map are not users.
func (d *DB) MatchNumbers(ctx context.Context, ns []phonebook.MSISDN) (map[phonebook.MSISDN]Match, error) {
	out := make(map[phonebook.MSISDN]Match)
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, matchParallel)
	var wg sync.WaitGroup
	for start := 0; start < len(ns); start += matchChunk {
		part := ns[start:min(start+matchChunk, len(ns))]
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			got, err := d.matchChunk(ctx, part)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			for n, m := range got {
				out[n] = m
			}
		}()
	}
	wg.Wait()
	return out, firstErr
}

func (d *DB) matchChunk(ctx context.Context, ns []phonebook.MSISDN) (map[phonebook.MSISDN]Match, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT u.number, `+statusCols("s")+`
		FROM users u LEFT JOIN user_status s ON s.number = u.number
		WHERE u.valid = 1 AND u.number IN (`+placeholders(len(ns))+`)`, anys(ns)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[phonebook.MSISDN]Match, len(ns))
	for rows.Next() {
		var n phonebook.MSISDN
		var st nullStatus
		if err := rows.Scan(append([]any{&n}, st.dest()...)...); err != nil {
			return nil, err
		}
		out[n] = Match{Status: st.status()}
	}
	return out, rows.Err()
}

// Holders returns the users who have number in their contact list; with
// onlineOnly, only those whose status is not offline; with mutualOnly, only
// those whom number has too.
func (d *DB) Holders(ctx context.Context, number phonebook.MSISDN, onlineOnly, mutualOnly bool) ([]phonebook.MSISDN, error) {
	q := "SELECT c.owner FROM contacts c"
	if onlineOnly {
		q += " JOIN user_status s ON s.number = c.owner AND s.im_status <> 'offline'"
	}
	q += " WHERE c.contact = ?"
	args := []any{number}
	if mutualOnly {
		q += " AND c.flag = ?"
		args = append(args, FlagMutual)
	}
	return queryNumbers(ctx, d.db, q+" ORDER BY c.owner", args...)
}

// ForgetContacts deletes what the contacts service holds for a user who is
// being deleted: their book, their contact rows (turning the other sides'
// mutual flags back to one-way) and their status. Other users' rows for the
// number stay: it is still in their books. The lookup budget stays too, so
// deleting an account does not refill it.
func (d *DB) ForgetContacts(ctx context.Context, owner phonebook.MSISDN) error {
	return d.retryTx(ctx, func(tx *sql.Tx) error { return forgetContacts(ctx, tx, owner) })
}

func forgetContacts(ctx context.Context, tx *sql.Tx, owner phonebook.MSISDN) error {
	have, err := loadContacts(ctx, tx, owner)
	if err != nil {
		return err
	}
	ns := make([]phonebook.MSISDN, 0, len(have))
	for n := range have {
		ns = append(ns, n)
	}
	sortNumbers(ns)
	if err := removeContacts(ctx, tx, owner, ns, now()); err != nil {
		return err
	}
	for _, q := range []string{"DELETE FROM book_entries WHERE owner = ?", "DELETE FROM user_status WHERE number = ?"} {
		if _, err := tx.ExecContext(ctx, q, owner); err != nil {
			return err
		}
	}
	return nil
}
