package client

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// request is a contacts or presence request waiting for its answer, which
// may come in several frames (more = true on all but the last); the reader
// gathers them here.
type request struct {
	done     chan struct{}
	sync     *relaypb.ContactsSyncResult
	set      *relaypb.PresenceSetResult
	presence []*relaypb.Presence
	err      error
}

// contactsState is the client's side of contacts and presence.
type contactsState struct {
	reqMu    sync.Mutex
	requests map[string]*request
	loginMu  sync.Mutex
	login    []*relaypb.Presence // the unsolicited PresenceList being gathered

	presenceChanges chan *relaypb.PresenceChanged
	joins           chan *relaypb.ContactJoined
	presenceLists   chan []*relaypb.Presence
}

func (cs *contactsState) init(buffer int) {
	cs.requests = make(map[string]*request)
	cs.presenceChanges = make(chan *relaypb.PresenceChanged, buffer)
	cs.joins = make(chan *relaypb.ContactJoined, buffer)
	cs.presenceLists = make(chan []*relaypb.Presence, 16)
}

// PresenceChanges yields contacts' presence changes pushed by the server.
// Pushes that find it full are dropped: the next PresenceList (at login,
// or QueryPresence) has the state.
func (c *Client) PresenceChanges() <-chan *relaypb.PresenceChanged { return c.cs.presenceChanges }

// ContactJoins yields numbers of the address book that became users.
// Pushes that find it full are dropped.
func (c *Client) ContactJoins() <-chan *relaypb.ContactJoined { return c.cs.joins }

// PresenceLists yields the presence of the visible contacts that the
// server sends after login, complete (gathered from its frames).
func (c *Client) PresenceLists() <-chan []*relaypb.Presence { return c.cs.presenceLists }

// SyncContacts uploads the address book (full or delta) and returns the
// server's report on every entry. RequestId is filled in when empty. A
// request too large for one frame fails here; sync a long book as a full
// sync of few entries followed by deltas of added entries, or over HTTP.
func (c *Client) SyncContacts(ctx context.Context, req *relaypb.ContactsSync) (*relaypb.ContactsSyncResult, error) {
	r, err := c.request(ctx, req.GetRequestId(), func(id string) *relaypb.Frame {
		req.RequestId = id
		return &relaypb.Frame{Body: &relaypb.Frame_ContactsSync{ContactsSync: req}}
	})
	if err != nil {
		return nil, err
	}
	return r.sync, nil
}

// SetPresence changes the user's own presence (the fields set in u) and
// returns it as the server now holds it.
func (c *Client) SetPresence(ctx context.Context, u *relaypb.PresenceSet) (*relaypb.Presence, error) {
	r, err := c.request(ctx, u.GetRequestId(), func(id string) *relaypb.Frame {
		u.RequestId = id
		return &relaypb.Frame{Body: &relaypb.Frame_PresenceSet{PresenceSet: u}}
	})
	if err != nil {
		return nil, err
	}
	return r.set.GetPresence(), nil
}

// QueryPresence returns the presence of every contact who lets the user
// see it; contacts not listed are offline or hidden.
func (c *Client) QueryPresence(ctx context.Context) ([]*relaypb.Presence, error) {
	r, err := c.request(ctx, "", func(id string) *relaypb.Frame {
		return &relaypb.Frame{Body: &relaypb.Frame_PresenceQuery{PresenceQuery: &relaypb.PresenceQuery{RequestId: id}}}
	})
	if err != nil {
		return nil, err
	}
	return r.presence, nil
}

func (c *Client) request(ctx context.Context, id string, build func(id string) *relaypb.Frame) (*request, error) {
	if id == "" {
		id = "r" + strconv.FormatUint(c.idSeq.Add(1), 36)
	}
	f := build(id)
	max := c.opts.MaxFrameSize
	if max <= 0 {
		max = wire.DefaultMaxFrameSize
	}
	if n := proto.Size(f); n > max {
		return nil, phonebook.Errorf(phonebook.ETooLarge, "request of %d bytes is over the %d-byte frame limit; send fewer entries per sync", n, max)
	}
	r := &request{done: make(chan struct{})}
	c.cs.reqMu.Lock()
	if c.cs.requests == nil {
		c.cs.reqMu.Unlock()
		return nil, c.closedErr()
	}
	if _, dup := c.cs.requests[id]; dup {
		c.cs.reqMu.Unlock()
		return nil, errors.New("relay client: request id " + id + " is already in flight")
	}
	c.cs.requests[id] = r
	c.cs.reqMu.Unlock()
	defer func() {
		c.cs.reqMu.Lock()
		if c.cs.requests != nil {
			delete(c.cs.requests, id)
		}
		c.cs.reqMu.Unlock()
	}()
	if err := c.write(f); err != nil {
		return nil, err
	}
	select {
	case <-r.done:
		return r, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// answer completes the request id (under reqMu) unless more is coming.
func (c *Client) answer(id string, more bool, fill func(r *request)) {
	c.cs.reqMu.Lock()
	defer c.cs.reqMu.Unlock()
	r := c.cs.requests[id]
	if r == nil {
		return // abandoned by its caller
	}
	fill(r)
	if !more {
		delete(c.cs.requests, id)
		close(r.done)
	}
}

// handleContactsFrame is the reader's part for contacts and presence
// frames; it reports whether f was one.
func (c *Client) handleContactsFrame(f *relaypb.Frame) bool {
	switch b := f.Body.(type) {
	case *relaypb.Frame_ContactsSyncResult:
		res := b.ContactsSyncResult
		c.answer(res.RequestId, res.More, func(r *request) {
			if r.sync == nil {
				r.sync = res
			} else {
				r.sync.Entries = append(r.sync.Entries, res.Entries...)
				r.sync.Contacts, r.sync.BookEntries = res.Contacts, res.BookEntries
			}
			r.sync.More = false
		})
	case *relaypb.Frame_PresenceSetResult:
		c.answer(b.PresenceSetResult.RequestId, false, func(r *request) { r.set = b.PresenceSetResult })
	case *relaypb.Frame_PresenceList:
		pl := b.PresenceList
		if pl.RequestId != "" {
			c.answer(pl.RequestId, pl.More, func(r *request) { r.presence = append(r.presence, pl.Presence...) })
			return true
		}
		c.cs.loginMu.Lock()
		c.cs.login = append(c.cs.login, pl.Presence...)
		list := c.cs.login
		if !pl.More {
			c.cs.login = nil
		}
		c.cs.loginMu.Unlock()
		if !pl.More {
			select {
			case c.cs.presenceLists <- list:
			default:
			}
		}
	case *relaypb.Frame_PresenceChanged:
		select {
		case c.cs.presenceChanges <- b.PresenceChanged:
		default:
		}
	case *relaypb.Frame_ContactJoined:
		select {
		case c.cs.joins <- b.ContactJoined:
		default:
		}
	case *relaypb.Frame_Error:
		if b.Error.RequestId == "" {
			return false
		}
		c.answer(b.Error.RequestId, false, func(r *request) {
			r.err = &ServerError{Code: phonebook.Code(b.Error.Code), Message: b.Error.Message}
		})
	default:
		return false
	}
	return true
}

// failRequests fails every request in flight when the connection ends.
func (c *Client) failRequests(err error) {
	c.cs.reqMu.Lock()
	reqs := c.cs.requests
	c.cs.requests = nil
	c.cs.reqMu.Unlock()
	for _, r := range reqs {
		r.err = err
		close(r.done)
	}
}
