// Package contacts makes a phone's address book the user's IM contact list
// (patent units 615, 616, 625 and 617, 618, 624; steps S113-S115): it syncs
// the book (full or delta), normalises every number to E.164 in the owner's
// region, keeps the contact table and its mutual flags, matches numbers
// against registered users without letting anyone enumerate them, keeps each
// user's status and pushes changes to the contacts allowed to see them, and
// gives the book back on restore. vCard files import into the same sync.
package contacts

import (
	"context"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// Limits on what one request may carry. They bound memory and statement
// sizes; the column widths of migration 0005 are above them.
const (
	MaxIDLen      = 64  // bytes of an entry id
	MaxNameRunes  = 100 // name and group
	MaxRawRunes   = 64  // a number as written
	MaxLabelRunes = 32  // "mobile", "work"...
)

// Config tunes the service. Zero values mean the defaults in brackets.
type Config struct {
	// Visibility is who sees a user's presence unless the user chose
	// otherwise [mutual].
	Visibility Visibility
	// LookupCapacity is the anti-enumeration bucket: how many numbers new
	// to an owner's contact list one owner may look up in a burst [50000];
	// negative disables the limit.
	LookupCapacity int64
	// LookupRefillPerSecond is how fast the bucket refills [50000 a day].
	LookupRefillPerSecond float64
	MaxEntries            int // entries in one book [10000]
	MaxPhonesPerEntry     int // phones on one entry [20]
	// PushWorkers deliver presence and join events; each owns a share of
	// the users, so one user's events arrive in order [4].
	PushWorkers int
	// MaxPendingPushes bounds users with an undelivered event [100000].
	// Beyond it new events are dropped (counted); state stays stored and
	// clients see it at their next refresh.
	MaxPendingPushes int
	NotifyBatch      int // recipients per Notify call [1000]
	// NormalizeCache is how many (region, number as written) results to
	// remember [200000, about 20 MB].
	NormalizeCache int
	NotifyTimeout  time.Duration // per Notify call [5s]
}

// DefaultConfig returns the values a zero Config stands for.
func DefaultConfig() Config { return Config{}.withDefaults() }

// Validate reports what New refuses.
func (c Config) Validate() error {
	if c = c.withDefaults(); !c.Visibility.valid() {
		return phonebook.Errorf(phonebook.EInvalid, "contacts: visibility %q is not one of mutual, contacts, nobody", c.Visibility)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Visibility == "" {
		c.Visibility = VisibleMutual
	}
	if c.LookupCapacity == 0 {
		c.LookupCapacity = 50000
	}
	if c.LookupRefillPerSecond == 0 {
		c.LookupRefillPerSecond = 50000.0 / 86400
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = 10000
	}
	if c.MaxPhonesPerEntry == 0 {
		c.MaxPhonesPerEntry = 20
	}
	if c.PushWorkers == 0 {
		c.PushWorkers = 4
	}
	if c.MaxPendingPushes == 0 {
		c.MaxPendingPushes = 100000
	}
	if c.NotifyBatch == 0 {
		c.NotifyBatch = 1000
	}
	if c.NormalizeCache == 0 {
		c.NormalizeCache = 200000
	}
	if c.NotifyTimeout == 0 {
		c.NotifyTimeout = 5 * time.Second
	}
	return c
}

func (c Config) budget() store.LookupBudget {
	if c.LookupCapacity < 0 {
		return store.LookupBudget{}
	}
	return store.LookupBudget{Capacity: c.LookupCapacity, RefillPerSecond: c.LookupRefillPerSecond}
}

// Service is the contacts and presence service. Its methods are safe for
// concurrent use; Close stops its push workers.
type Service struct {
	db   *store.DB
	cfg  Config
	log  *slog.Logger
	m    *metrics
	push *pusher
	norm *normalizer
}

// New starts a service. notifier carries pushes to connected clients (the
// relay implements it); nil drops them.
func New(db *store.DB, notifier Notifier, cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if notifier == nil {
		notifier = discard{}
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Service{db: db, cfg: cfg, log: log, m: m, norm: newNormalizer(cfg.NormalizeCache)}
	s.push = newPusher(s, notifier)
	return s, nil
}

// SetNotifier replaces the notifier given to New. The relay needs the
// service (for Online and Offline) and the service needs the relay (to
// push), so whichever is built second closes the loop here.
func (s *Service) SetNotifier(n Notifier) {
	if n == nil {
		n = discard{}
	}
	s.push.n.Store(&n)
}

// Close stops accepting pushes, delivers those pending until ctx ends, and
// stops the workers.
func (s *Service) Close(ctx context.Context) error { return s.push.close(ctx) }

// Entry is one card of a phone's address book. ID is the phone's own id for
// the card, stable across syncs; deltas name entries by it.
type Entry struct {
	ID     string  `json:"id"`
	Name   string  `json:"name"`
	Group  string  `json:"group,omitempty"`
	Phones []Phone `json:"phones"`
}

// Phone is one number of a card, as written on the phone.
type Phone struct {
	Number string `json:"number"`
	Label  string `json:"label,omitempty"`
}

// SyncRequest is one sync. Full: Entries is the whole book and replaces what
// the server holds. Delta: Added and Changed upsert entries by id (an added
// id that exists is a change, a changed id that does not is an add), Removed
// deletes ids (unknown ids are ignored, so a retried delta is harmless).
type SyncRequest struct {
	Full    bool     `json:"full"`
	Entries []Entry  `json:"entries,omitempty"`
	Added   []Entry  `json:"added,omitempty"`
	Changed []Entry  `json:"changed,omitempty"`
	Removed []string `json:"removed,omitempty"`
}

// SyncResult reports on every entry the request carried.
type SyncResult struct {
	Entries  []EntryResult `json:"entries"`
	Contacts int           `json:"contacts"`     // distinct valid numbers in the book now
	Book     int           `json:"book_entries"` // entries in the book now
}

// EntryResult reports on one entry. Code and Reason are set when none of its
// phones is a valid number: the entry is stored (restore gives it back) but
// is no contact.
type EntryResult struct {
	ID     string         `json:"id"`
	Phones []PhoneResult  `json:"phones"`
	Code   phonebook.Code `json:"error,omitempty"`
	Reason string         `json:"reason,omitempty"`
}

// PhoneResult reports on one phone: its E.164 form or why it has none,
// whether a user has it, whether that user has the owner too, and their
// presence when the user lets the owner see it.
type PhoneResult struct {
	Raw        string           `json:"raw"`
	Number     phonebook.MSISDN `json:"number,omitempty"`
	Code       phonebook.Code   `json:"error,omitempty"`
	Reason     string           `json:"reason,omitempty"`
	Self       bool             `json:"self,omitempty"`
	Registered bool             `json:"registered"`
	Mutual     bool             `json:"mutual"`
	Presence   *Presence        `json:"presence,omitempty"`
}

// Sync applies an address-book upload for owner. Numbers are normalised in
// ownerRegion ("" = the region of the owner's own number). A malformed
// request fails as a whole with EInvalid; a number that is not valid is
// reported on its entry, never dropped. Looking up more new numbers than the
// owner's budget allows fails with ERateLimited and changes nothing.
func (s *Service) Sync(ctx context.Context, owner phonebook.MSISDN, ownerRegion string, req SyncRequest) (SyncResult, error) {
	start := time.Now()
	res, err := s.sync(ctx, owner, ownerRegion, req)
	s.m.observeSync(req.Full, err, time.Since(start))
	return res, err
}

func (s *Service) sync(ctx context.Context, owner phonebook.MSISDN, region string, req SyncRequest) (SyncResult, error) {
	if region == "" {
		region = phonebook.RegionOf(owner)
	}
	ch := store.BookChange{Replace: req.Full, MaxEntries: s.cfg.MaxEntries, Budget: s.cfg.budget()}
	var sent []Entry
	if req.Full {
		if len(req.Added)+len(req.Changed)+len(req.Removed) > 0 {
			return SyncResult{}, phonebook.Errorf(phonebook.EInvalid, "a full sync carries entries only; added, changed and removed belong to a delta")
		}
		sent = req.Entries
	} else {
		if len(req.Entries) > 0 {
			return SyncResult{}, phonebook.Errorf(phonebook.EInvalid, "entries belong to a full sync (\"full\": true); a delta uses added, changed and removed")
		}
		sent = append(append(sent, req.Added...), req.Changed...)
		ch.Remove = req.Removed
	}
	if len(sent)+len(ch.Remove) > s.cfg.MaxEntries {
		return SyncResult{}, phonebook.Errorf(phonebook.EInvalid, "a sync may carry at most %d entries", s.cfg.MaxEntries)
	}
	seen := make(map[string]bool, len(sent)+len(ch.Remove))
	for _, id := range ch.Remove {
		if err := checkID(id); err != nil {
			return SyncResult{}, err
		}
		seen[id] = true
	}
	var raws []string
	for _, e := range sent {
		if err := s.checkEntry(e); err != nil {
			return SyncResult{}, err
		}
		if seen[e.ID] {
			return SyncResult{}, phonebook.Errorf(phonebook.EInvalid, "entry id %q appears twice in one sync", e.ID)
		}
		seen[e.ID] = true
		for _, p := range e.Phones {
			raws = append(raws, p.Number)
		}
	}
	upsert, entries, lookup := s.normalise(owner, region, sent, raws)
	ch.Upsert = upsert
	res := SyncResult{Entries: entries}

	applied, match, err := s.applyAndMatch(ctx, owner, ch, lookup)
	if err != nil {
		return SyncResult{}, err
	}
	res.Contacts, res.Book = applied.Contacts, applied.Entries
	for i := range res.Entries {
		for j := range res.Entries[i].Phones {
			pr := &res.Entries[i].Phones[j]
			m, ok := match[pr.Number]
			if !ok || pr.Self {
				continue
			}
			pr.Registered = true
			pr.Mutual = applied.Flags[pr.Number] == store.FlagMutual
			if m.Status != nil && s.visible(m.Status.Visibility, pr.Mutual) {
				pr.Presence = presenceOf(*m.Status)
			}
		}
	}
	if len(applied.NewMutual) > 0 {
		// The new mutual contacts may now see the owner: push the owner's
		// presence, as any change would.
		if st, err := s.db.UserStatus(ctx, owner); err == nil && st.IMStatus != store.StatusOffline {
			s.push.presence(st)
		}
	}
	return res, nil
}

// normalise turns the sent entries into book entries and per-phone results
// and lists the distinct numbers to look up (not the owner's own).
func (s *Service) normalise(owner phonebook.MSISDN, region string, sent []Entry, raws []string) ([]store.BookEntry, []EntryResult, []phonebook.MSISDN) {
	norm := s.norm.many(raws, region)
	upsert := make([]store.BookEntry, 0, len(sent))
	results := make([]EntryResult, len(sent))
	var lookup []phonebook.MSISDN
	looked := make(map[phonebook.MSISDN]bool)
	for i, e := range sent {
		be := store.BookEntry{EntryID: e.ID, Name: e.Name, Group: e.Group}
		er := EntryResult{ID: e.ID, Phones: make([]PhoneResult, len(e.Phones))}
		valid := 0
		for j, p := range e.Phones {
			pr := PhoneResult{Raw: p.Number}
			n, err := norm[0].n, norm[0].err
			norm = norm[1:]
			if err != nil {
				pr.Code, pr.Reason = phonebook.ErrorCode(err), phonebook.ErrorMessage(err)
			} else {
				valid++
				pr.Number, pr.Self = n, n == owner
				if !pr.Self && !looked[n] {
					looked[n] = true
					lookup = append(lookup, n)
				}
			}
			be.Phones = append(be.Phones, store.BookPhone{Raw: p.Number, Label: p.Label, Number: n})
			er.Phones[j] = pr
		}
		if valid == 0 {
			er.Code, er.Reason = phonebook.EInvalidNumber, "the entry has no valid phone number; it is kept for restore but is not a contact"
		}
		upsert = append(upsert, be)
		results[i] = er
	}
	return upsert, results, lookup
}

// applyAndMatch writes the change and looks the numbers up. Who is
// registered does not depend on the book, so the lookup runs while the book
// is written, on another connection; but an owner whose budget might not
// cover the sync gets the lookup only after the budget said yes, so refused
// syncs cost no lookups.
func (s *Service) applyAndMatch(ctx context.Context, owner phonebook.MSISDN, ch store.BookChange, lookup []phonebook.MSISDN) (store.BookApplied, map[phonebook.MSISDN]store.Match, error) {
	type matched struct {
		m   map[phonebook.MSISDN]store.Match
		err error
	}
	mc := make(chan matched, 1)
	lookupNow := func() {
		m, err := s.db.MatchNumbers(ctx, lookup)
		mc <- matched{m, err}
	}
	early := ch.Budget.Capacity == 0
	if !early {
		tokens, err := s.db.LookupTokens(ctx, owner, ch.Budget)
		early = err == nil && tokens >= int64(len(lookup))
	}
	if early {
		go lookupNow()
	}
	applied, err := s.db.ApplyBookChange(ctx, owner, ch)
	if !early && err == nil {
		lookupNow()
	}
	var match matched
	if early || err == nil {
		match = <-mc
	}
	if err != nil {
		if phonebook.ErrorCode(err) == phonebook.ERateLimited {
			s.m.lookupLimited.Inc()
		}
		return applied, nil, err
	}
	return applied, match.m, match.err
}

func checkID(id string) error {
	if id == "" || len(id) > MaxIDLen || !utf8.ValidString(id) || hasControl(id) {
		return phonebook.Errorf(phonebook.EInvalid, "entry id %q must be 1 to %d bytes of printable text", id, MaxIDLen)
	}
	return nil
}

func (s *Service) checkEntry(e Entry) error {
	if err := checkID(e.ID); err != nil {
		return err
	}
	if err := checkText("entry "+e.ID+": name", e.Name, MaxNameRunes); err != nil {
		return err
	}
	if err := checkText("entry "+e.ID+": group", e.Group, MaxNameRunes); err != nil {
		return err
	}
	if len(e.Phones) > s.cfg.MaxPhonesPerEntry {
		return phonebook.Errorf(phonebook.EInvalid, "entry %s has %d phones; at most %d", e.ID, len(e.Phones), s.cfg.MaxPhonesPerEntry)
	}
	for _, p := range e.Phones {
		if err := checkText("entry "+e.ID+": phone number", p.Number, MaxRawRunes); err != nil {
			return err
		}
		if err := checkText("entry "+e.ID+": phone label", p.Label, MaxLabelRunes); err != nil {
			return err
		}
	}
	return nil
}

// checkText accepts up to max runes of valid UTF-8 without control
// characters; longer text would not fit its column on MySQL.
func checkText(what, v string, max int) error {
	if !utf8.ValidString(v) {
		return phonebook.Errorf(phonebook.EInvalid, "%s is not valid UTF-8", what)
	}
	if n := utf8.RuneCountInString(v); n > max {
		return phonebook.Errorf(phonebook.EInvalid, "%s has %d characters; at most %d", what, n, max)
	}
	if hasControl(v) {
		return phonebook.Errorf(phonebook.EInvalid, "%s contains control characters", what)
	}
	return nil
}

func hasControl(v string) bool {
	return strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// Restore returns the owner's address book as last synced: every entry
// with its id, name, group and phones as written, in id order.
func (s *Service) Restore(ctx context.Context, owner phonebook.MSISDN) ([]Entry, error) {
	book, err := s.db.AddressBook(ctx, owner)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(book))
	for i, b := range book {
		e := Entry{ID: b.EntryID, Name: b.Name, Group: b.Group, Phones: make([]Phone, len(b.Phones))}
		for j, p := range b.Phones {
			e.Phones[j] = Phone{Number: p.Raw, Label: p.Label}
		}
		out[i] = e
	}
	return out, nil
}

// Contact is one row of the owner's contact list: one distinct number of the
// book, named after the first entry (by id) that holds it.
type Contact struct {
	Number     phonebook.MSISDN `json:"number"`
	Name       string           `json:"name"`
	Group      string           `json:"group,omitempty"`
	Registered bool             `json:"registered"`
	Mutual     bool             `json:"mutual"`
	Presence   *Presence        `json:"presence,omitempty"`
}

// Contacts returns the owner's contact list with what the owner may see of
// each number.
func (s *Service) Contacts(ctx context.Context, owner phonebook.MSISDN) ([]Contact, error) {
	rows, err := s.db.Contacts(ctx, owner)
	if err != nil {
		return nil, err
	}
	out := make([]Contact, len(rows))
	for i, r := range rows {
		c := Contact{Number: r.Number, Name: r.Name, Group: r.Group, Registered: r.Registered, Mutual: r.Flag == store.FlagMutual}
		if r.Registered && r.Status != nil && s.visible(r.Status.Visibility, c.Mutual) {
			c.Presence = presenceOf(*r.Status)
		}
		out[i] = c
	}
	return out, nil
}

// UserRegistered tells the service that number became a user: everyone
// online who has the number in their book is told the contact joined.
// Accounts call it after creating the user; it does not block.
func (s *Service) UserRegistered(ctx context.Context, number phonebook.MSISDN) {
	s.push.joined(number)
}
