package contacts

import (
	"context"
	"net/url"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// Visibility says who may see a user's presence (IM status, status text,
// activity, nickname, signature, site).
type Visibility string

const (
	// VisibleMutual: people who have my number and whom I have (flag 2).
	// The default: a stranger who has my number learns nothing beyond
	// "registered".
	VisibleMutual Visibility = "mutual"
	// VisibleContacts: everyone who has my number in their contact list,
	// whether or not I have theirs.
	VisibleContacts Visibility = "contacts"
	// VisibleNobody: no one; I always look offline.
	VisibleNobody Visibility = "nobody"
)

func (v Visibility) valid() bool {
	return v == VisibleMutual || v == VisibleContacts || v == VisibleNobody
}

// IM statuses. Online and offline are also set by the relay at login and
// logout.
const (
	StatusOnline  = "online"
	StatusBusy    = "busy"
	StatusAway    = "away"
	StatusOffline = store.StatusOffline
)

// Limits on presence fields.
const (
	MaxStatusTextRunes = 100
	MaxActivityLen     = 32
	MaxNicknameRunes   = 32
	MaxSignatureRunes  = 100
	MaxSiteLen         = 255
)

// Presence is what a contact may see of a user.
type Presence struct {
	Number     phonebook.MSISDN `json:"number"`
	IMStatus   string           `json:"im_status"`
	StatusText string           `json:"status_text,omitempty"`
	Activity   string           `json:"activity,omitempty"`
	Nickname   string           `json:"nickname,omitempty"`
	Signature  string           `json:"signature,omitempty"`
	Site       string           `json:"site,omitempty"`
	UpdatedAt  time.Time        `json:"updated_at"`
	// Visibility is set only on the user's own presence.
	Visibility Visibility `json:"visibility,omitempty"`
}

func presenceOf(st store.Status) *Presence {
	return &Presence{Number: st.Number, IMStatus: st.IMStatus, StatusText: st.StatusText, Activity: st.Activity,
		Nickname: st.Nickname, Signature: st.Signature, Site: st.Site, UpdatedAt: st.UpdatedAt}
}

// PresenceUpdate changes the fields that are set; "" clears a text field.
// Activity is an open vocabulary of lower-case words the client detects on
// the phone: in_call, browsing, flip_open, ... Visibility "" returns to the
// server default.
type PresenceUpdate struct {
	IMStatus   *string `json:"im_status,omitempty"`
	StatusText *string `json:"status_text,omitempty"`
	Activity   *string `json:"activity,omitempty"`
	Nickname   *string `json:"nickname,omitempty"`
	Signature  *string `json:"signature,omitempty"`
	Site       *string `json:"site,omitempty"`
	Visibility *string `json:"visibility,omitempty"`
}

func (u PresenceUpdate) check() error {
	if u.IMStatus != nil {
		switch *u.IMStatus {
		case StatusOnline, StatusBusy, StatusAway, StatusOffline:
		default:
			return phonebook.Errorf(phonebook.EInvalid, "im_status %q is not one of online, busy, away, offline", *u.IMStatus)
		}
	}
	for _, f := range []struct {
		name string
		v    *string
		max  int
	}{{"status_text", u.StatusText, MaxStatusTextRunes}, {"nickname", u.Nickname, MaxNicknameRunes}, {"signature", u.Signature, MaxSignatureRunes}} {
		if f.v != nil {
			if err := checkText(f.name, *f.v, f.max); err != nil {
				return err
			}
		}
	}
	if u.Activity != nil {
		a := *u.Activity
		if len(a) > MaxActivityLen {
			return phonebook.Errorf(phonebook.EInvalid, "activity is longer than %d characters", MaxActivityLen)
		}
		for _, r := range a {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
				return phonebook.Errorf(phonebook.EInvalid, "activity %q may hold only a-z, 0-9 and _ (e.g. in_call)", a)
			}
		}
	}
	if u.Site != nil && *u.Site != "" {
		site := *u.Site
		p, err := url.Parse(site)
		if len(site) > MaxSiteLen || err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return phonebook.Errorf(phonebook.EInvalid, "site must be an http or https address of at most %d characters", MaxSiteLen)
		}
	}
	if u.Visibility != nil && *u.Visibility != "" && !Visibility(*u.Visibility).valid() {
		return phonebook.Errorf(phonebook.EInvalid, "visibility %q is not one of mutual, contacts, nobody", *u.Visibility)
	}
	return nil
}

// SetPresence applies a partial update to the user's own presence, returns
// the result, and pushes it to the contacts allowed to see it.
func (s *Service) SetPresence(ctx context.Context, number phonebook.MSISDN, u PresenceUpdate) (Presence, error) {
	if err := u.check(); err != nil {
		return Presence{}, err
	}
	st, err := s.update(ctx, number, store.StatusUpdate{IMStatus: u.IMStatus, StatusText: u.StatusText, Activity: u.Activity,
		Nickname: u.Nickname, Signature: u.Signature, Site: u.Site, Visibility: u.Visibility})
	if err != nil {
		return Presence{}, err
	}
	return s.own(st), nil
}

// MyPresence returns the user's own presence, with their visibility choice.
func (s *Service) MyPresence(ctx context.Context, number phonebook.MSISDN) (Presence, error) {
	st, err := s.db.UserStatus(ctx, number)
	if err != nil {
		return Presence{}, err
	}
	return s.own(st), nil
}

func (s *Service) own(st store.Status) Presence {
	p := *presenceOf(st)
	p.Visibility = s.cfg.Visibility
	if st.Visibility != "" {
		p.Visibility = Visibility(st.Visibility)
	}
	return p
}

// Online marks the user online when they were offline (a status chosen
// while connected, such as busy, survives a reconnect). The relay calls it
// at login.
func (s *Service) Online(ctx context.Context, number phonebook.MSISDN) error {
	on := StatusOnline
	_, err := s.update(ctx, number, store.StatusUpdate{IMStatus: &on, IMStatusIfOffline: true})
	return err
}

// Offline marks the user offline and clears their phone activity, which
// means nothing without a connection. The relay calls it at logout and
// when it loses the user's last connection (on any node).
func (s *Service) Offline(ctx context.Context, number phonebook.MSISDN) error {
	off, none := StatusOffline, ""
	_, err := s.update(ctx, number, store.StatusUpdate{IMStatus: &off, Activity: &none})
	return err
}

// ResetOnline records every user offline, their phone activity cleared,
// without pushes: for a server that starts alone, whose users a crash
// left online (relay.Server.RecoverPresence). It returns how many it
// changed.
func (s *Service) ResetOnline(ctx context.Context) (int64, error) {
	return s.db.ResetOnline(ctx)
}

func (s *Service) update(ctx context.Context, number phonebook.MSISDN, u store.StatusUpdate) (store.Status, error) {
	st, changed, err := s.db.UpdateStatus(ctx, number, u)
	if err != nil {
		return st, err
	}
	if changed {
		s.push.presence(st)
	}
	return st, nil
}

// ContactsPresence returns the presence of every contact of owner who lets
// owner see it, in one response, for login and refresh. Contacts absent
// from it are offline or hidden; the client shows them offline.
func (s *Service) ContactsPresence(ctx context.Context, owner phonebook.MSISDN) ([]Presence, error) {
	rows, err := s.db.ContactStatuses(ctx, owner)
	if err != nil {
		return nil, err
	}
	out := make([]Presence, 0, len(rows))
	for _, r := range rows {
		if s.visible(r.Status.Visibility, r.Flag == store.FlagMutual) {
			out = append(out, *presenceOf(r.Status))
		}
	}
	return out, nil
}

// visible decides whether a viewer who has the subject in their book may see
// the subject's presence: vis is the subject's choice ("" = server default),
// mutual whether the subject has the viewer too.
func (s *Service) visible(vis string, mutual bool) bool {
	v := Visibility(vis)
	if v == "" {
		v = s.cfg.Visibility
	}
	switch v {
	case VisibleContacts:
		return true
	case VisibleMutual:
		return mutual
	default:
		return false
	}
}
