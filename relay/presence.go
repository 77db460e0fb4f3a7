package relay

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// Contacts is what the relay needs from the contacts and presence service;
// *contacts.Service implements it. With it set (Deps.Contacts), a client
// syncs its address book and sets and reads presence over its relay
// connection, receives the presence of its visible contacts right after
// AuthOK, and the relay marks users online at their first connection and
// offline when their last one ends.
type Contacts interface {
	Sync(ctx context.Context, owner phonebook.MSISDN, ownerRegion string, req contacts.SyncRequest) (contacts.SyncResult, error)
	SetPresence(ctx context.Context, number phonebook.MSISDN, u contacts.PresenceUpdate) (contacts.Presence, error)
	ContactsPresence(ctx context.Context, owner phonebook.MSISDN) ([]contacts.Presence, error)
	Online(ctx context.Context, number phonebook.MSISDN) error
	Offline(ctx context.Context, number phonebook.MSISDN) error
	// ResetOnline records every user offline (RecoverPresence).
	ResetOnline(ctx context.Context) (int64, error)
}

var _ Contacts = (*contacts.Service)(nil)

// contactsRequestTimeout bounds one contacts request's store work.
const contactsRequestTimeout = 30 * time.Second

// presenceTracker counts each user's live connections on this node and
// turns the first connection into Online and the end of the last into
// Offline. Each user's transitions are applied by at most one goroutine at
// a time, always to the latest wanted state, so a quick logout-login never
// leaves a connected user marked offline.
type presenceTracker struct {
	srv *Server
	mu  sync.Mutex
	m   map[phonebook.MSISDN]*tracked
	wg  sync.WaitGroup
}

type tracked struct {
	conns    int
	applying bool
	applied  bool // online as far as the store knows (from this node)
	known    bool // applied has been set at least once
	gen      int  // bumped by reassert: a store write in flight no longer counts
	// online is closed once the store shows the user online (or they
	// left again before it did); nil when no login waits for that.
	online chan struct{}
}

func newPresenceTracker(srv *Server) *presenceTracker {
	return &presenceTracker{srv: srv, m: make(map[phonebook.MSISDN]*tracked)}
}

// connected counts a new session of n. The channel it returns is closed
// once the store shows n online: from then on every change of a contact's
// presence is pushed to n, so a PresenceList read after it misses nothing.
func (t *presenceTracker) connected(n phonebook.MSISDN) <-chan struct{} { return t.change(n, +1) }

// disconnected counts the end of a session of n.
func (t *presenceTracker) disconnected(n phonebook.MSISDN) { t.change(n, -1) }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (t *presenceTracker) change(n phonebook.MSISDN, d int) <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.m[n]
	if tr == nil {
		tr = &tracked{}
		t.m[n] = tr
	}
	tr.conns = max(0, tr.conns+d)
	done := closedChan
	if d > 0 && !(tr.known && tr.applied && !tr.applying) {
		if tr.online == nil {
			tr.online = make(chan struct{})
		}
		done = tr.online
	}
	if tr.applying || (tr.known && tr.applied == (tr.conns > 0)) {
		if !tr.applying && tr.conns == 0 {
			delete(t.m, n)
		}
		return done
	}
	tr.applying = true
	t.wg.Add(1)
	go t.apply(n, tr)
	return done
}

// apply brings the store in line with the wanted state until it stops
// changing.
func (t *presenceTracker) apply(n phonebook.MSISDN, tr *tracked) {
	defer t.wg.Done()
	for {
		t.mu.Lock()
		want := tr.conns > 0
		if tr.known && tr.applied == want {
			tr.applying = false
			if tr.online != nil {
				close(tr.online) // online, or nobody left to wait
				tr.online = nil
			}
			if tr.conns == 0 {
				delete(t.m, n)
			}
			t.mu.Unlock()
			return
		}
		gen := tr.gen
		t.mu.Unlock()
		ctx, cancel := context.WithTimeout(t.srv.ctx, contactsRequestTimeout)
		var err error
		switch {
		case want:
			err = t.srv.contacts.Online(ctx, n)
		case t.srv.router.Locate(n) != nil:
			// Still connected to another node (cluster router): that
			// node marks the user offline when it loses them.
		default:
			err = t.srv.contacts.Offline(ctx, n)
		}
		cancel()
		if err != nil && t.srv.ctx.Err() == nil {
			t.srv.log.Warn("relay: presence not recorded", "number", n, "online", want, "err", err)
		}
		t.mu.Lock()
		tr.applied, tr.known = want, tr.gen == gen
		if want && tr.online != nil {
			close(tr.online)
			tr.online = nil
		}
		t.mu.Unlock()
	}
}

// reassert writes n's presence to the store again if n is connected here:
// another node may have marked them offline (see Server.Resynced).
func (t *presenceTracker) reassert(n phonebook.MSISDN) {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr := t.m[n]
	if tr == nil || tr.conns == 0 {
		return
	}
	tr.known = false
	tr.gen++
	if !tr.applying {
		tr.applying = true
		t.wg.Add(1)
		go t.apply(n, tr)
	}
}

// Resynced is told by a cluster router (cluster.Router.OnResync) that the
// node re-joined the cluster after a NATS outage, for each session ep of
// this server: presence pushes to it may have been lost, so it gets a fresh
// PresenceList; with reassert the cluster had dropped its registration and
// other nodes may have marked its user offline, so the store is told again
// that the user is online (and their contacts are told).
func (srv *Server) Resynced(ep Endpoint, reassert bool) {
	s, ok := ep.(*session)
	if !ok || srv.contacts == nil || srv.stopping.Load() {
		return
	}
	if reassert {
		srv.presence.reassert(s.number)
	}
	srv.presence.wg.Add(1)
	go func() {
		defer srv.presence.wg.Done()
		srv.sendPresenceList(s, "")
	}()
}

// Gone is told by a cluster router (cluster.Router.OnGone) that number's
// session on a node that died was removed and that the number has no
// session left anywhere: nobody marked the user offline, so the relay
// does, as that node would have at logout, unless the user reconnected
// meanwhile.
func (srv *Server) Gone(ctx context.Context, number phonebook.MSISDN) {
	if srv.contacts == nil {
		return
	}
	if err := srv.contacts.Offline(ctx, number); err != nil {
		srv.log.Warn("relay: presence of a dead node's user not recorded", "number", number, "err", err)
		return
	}
	if srv.router.Locate(number) != nil {
		srv.contacts.Online(ctx, number) // reconnected meanwhile
	}
}

// RecoverPresence runs once, before Serve. A relay alone (Deps.Router nil)
// held every connection and holds none yet, so users that a crash left
// online are recorded offline; otherwise they would look online to their
// contacts until they next logged in and out. In a cluster other nodes
// hold connections, and their users' presence stays; the cluster router
// reports a dead node's users (Gone).
func (srv *Server) RecoverPresence(ctx context.Context) error {
	if !srv.alone || srv.contacts == nil {
		return nil
	}
	n, err := srv.contacts.ResetOnline(ctx)
	if err != nil {
		return fmt.Errorf("relay: reset presence: %w", err)
	}
	if n > 0 {
		srv.log.Info("users left online by the last run marked offline", "count", n)
	}
	return nil
}

// wait waits for transitions in flight (at shutdown, after every session
// has ended, so that everyone is recorded offline).
func (t *presenceTracker) wait() { t.wg.Wait() }

// contactsLogin runs after AuthOK: the user counts as online, and once the
// store shows them so (and pushes reach them), their visible contacts'
// presence follows AuthOK.
func (srv *Server) contactsLogin(s *session) {
	if srv.contacts == nil {
		return
	}
	online := srv.presence.connected(s.number)
	s.online = online
	srv.presence.wg.Add(1)
	go func() {
		defer srv.presence.wg.Done()
		select {
		case <-online:
		case <-s.closing:
			return
		}
		srv.sendPresenceList(s, "")
	}()
}

// contactsLogout runs when a session has ended, however it ended.
func (srv *Server) contactsLogout(s *session) {
	if srv.contacts == nil {
		return
	}
	srv.presence.disconnected(s.number)
}

func (srv *Server) sendPresenceList(s *session, requestID string) {
	ctx, cancel := context.WithTimeout(srv.ctx, contactsRequestTimeout)
	defer cancel()
	list, err := srv.contacts.ContactsPresence(ctx, s.number)
	if err != nil {
		if requestID != "" {
			s.Push(requestError(requestID, err))
		} else if srv.ctx.Err() == nil {
			srv.log.Warn("relay: presence list at login", "number", s.number, "err", err)
		}
		return
	}
	ps := make([]*relaypb.Presence, len(list))
	for i := range list {
		ps[i] = PresenceToProto(&list[i])
	}
	runs := SplitBySize(ps, srv.chunkBudget())
	for i, run := range runs {
		s.Push(&relaypb.Frame{Body: &relaypb.Frame_PresenceList{PresenceList: &relaypb.PresenceList{
			RequestId: requestID, Presence: run, More: i < len(runs)-1,
		}}})
	}
}

// chunkBudget is how many bytes of repeated items one answer frame may
// carry, leaving room for the envelope and the other fields.
func (srv *Server) chunkBudget() int { return srv.cfg.MaxFrameSize - 512 }

// SplitBySize splits items into runs whose encoded size stays under
// budget bytes, so that a long contact list never makes a frame the peer
// (or this side's writer) refuses. There is always at least one run. The
// relay splits its answers with it; a client can split its requests.
func SplitBySize[T proto.Message](items []T, budget int) [][]T {
	var out [][]T
	start, size := 0, 0
	for i, it := range items {
		n := proto.Size(it) + 8 // tag and length of a repeated field element
		if i > start && size+n > budget {
			out = append(out, items[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(out, items[start:])
}

func requestError(requestID string, err error) *relaypb.Frame {
	f := errorFrame(err)
	f.GetError().RequestId = requestID
	return f
}

// handleContactsFrame handles the contacts and presence requests. It
// reports false for frames that are not its own.
func (srv *Server) handleContactsFrame(s *session, f *relaypb.Frame, now time.Time) (handled bool, err error) {
	// The reader reuses f for the next frame: take what the request needs
	// out of it now, into run, which is answered later.
	var id string
	var run func(ctx context.Context)
	switch b := f.Body.(type) {
	case *relaypb.Frame_ContactsSync:
		id = b.ContactsSync.GetRequestId()
		region, req := b.ContactsSync.GetRegion(), syncRequest(b.ContactsSync)
		run = func(ctx context.Context) { srv.contactsSync(ctx, s, id, region, req) }
	case *relaypb.Frame_PresenceSet:
		id = b.PresenceSet.GetRequestId()
		u := presenceUpdate(b.PresenceSet)
		run = func(ctx context.Context) {
			p, err := srv.contacts.SetPresence(ctx, s.number, u)
			if err != nil {
				s.Push(requestError(id, err))
				return
			}
			s.Push(&relaypb.Frame{Body: &relaypb.Frame_PresenceSetResult{PresenceSetResult: &relaypb.PresenceSetResult{
				RequestId: id, Presence: PresenceToProto(&p)}}})
		}
	case *relaypb.Frame_PresenceQuery:
		id = b.PresenceQuery.GetRequestId()
		run = func(context.Context) { srv.sendPresenceList(s, id) }
	default:
		return false, nil
	}
	switch {
	case srv.contacts == nil:
		s.Push(requestError(id, phonebook.Errorf(phonebook.EUnknownFrame, "this relay has no contacts service; %s is not served", wire.FrameKind(f))))
		return true, nil
	case id == "" || len(id) > 64:
		s.Push(requestError(truncate(id, 64), phonebook.Errorf(phonebook.EInvalid, "request_id must be 1 to 64 bytes")))
		return true, nil
	case !s.limiter.AllowN(now, 1):
		// Each request costs store work, so they share the Send rate.
		s.Push(requestError(id, &phonebook.Error{Code: phonebook.ERateLimited, Message: "requests too fast", RetryAfter: now.Add(time.Second)}))
		return true, nil
	}
	// One request at a time per connection, answered off the reader so
	// that DeliverAcks keep flowing while the store works; a client that
	// pipelines requests waits here.
	if s.contactsReq == nil {
		s.contactsReq = make(chan struct{}, 1) // reader goroutine only
	}
	slot := s.contactsReq
	select {
	case slot <- struct{}{}:
	case <-s.closing:
		return true, nil
	}
	srv.presence.wg.Add(1)
	go func() {
		defer srv.presence.wg.Done()
		defer func() { <-slot }()
		ctx, cancel := context.WithTimeout(srv.ctx, contactsRequestTimeout)
		defer cancel()
		if s.online != nil {
			// Answer after the login's Online is stored, so that a status
			// set right after login comes back online, not offline.
			select {
			case <-s.online:
			case <-s.closing:
				return
			case <-ctx.Done():
			}
		}
		run(ctx)
	}()
	return true, nil
}

func syncRequest(req *relaypb.ContactsSync) contacts.SyncRequest {
	return contacts.SyncRequest{
		Full: req.GetFull(), Entries: entriesFromProto(req.GetEntries()), Added: entriesFromProto(req.GetAdded()),
		Changed: entriesFromProto(req.GetChanged()), Removed: req.GetRemoved(),
	}
}

func (srv *Server) contactsSync(ctx context.Context, s *session, id, region string, req contacts.SyncRequest) {
	if len(region) > 3 {
		s.Push(requestError(id, phonebook.Errorf(phonebook.EInvalid, "region %q is not an ISO 3166 region code", truncate(region, 16))))
		return
	}
	res, err := srv.contacts.Sync(ctx, s.number, region, req)
	if err != nil {
		s.Push(requestError(id, err))
		return
	}
	ers := make([]*relaypb.EntryResult, len(res.Entries))
	for i, e := range res.Entries {
		er := &relaypb.EntryResult{Id: e.ID, Error: string(e.Code), Reason: e.Reason, Phones: make([]*relaypb.PhoneResult, len(e.Phones))}
		for j, p := range e.Phones {
			er.Phones[j] = &relaypb.PhoneResult{Raw: p.Raw, Number: string(p.Number), Error: string(p.Code), Reason: p.Reason,
				Self: p.Self, Registered: p.Registered, Mutual: p.Mutual, Presence: PresenceToProto(p.Presence)}
		}
		ers[i] = er
	}
	runs := SplitBySize(ers, srv.chunkBudget())
	for i, run := range runs {
		s.Push(&relaypb.Frame{Body: &relaypb.Frame_ContactsSyncResult{ContactsSyncResult: &relaypb.ContactsSyncResult{
			RequestId: id, Entries: run, Contacts: uint32(res.Contacts), BookEntries: uint32(res.Book), More: i < len(runs)-1,
		}}})
	}
}

func entriesFromProto(in []*relaypb.ContactEntry) []contacts.Entry {
	if len(in) == 0 {
		return nil
	}
	out := make([]contacts.Entry, len(in))
	for i, e := range in {
		ce := contacts.Entry{ID: e.GetId(), Name: e.GetName(), Group: e.GetGroup(), Phones: make([]contacts.Phone, len(e.GetPhones()))}
		for j, p := range e.GetPhones() {
			ce.Phones[j] = contacts.Phone{Number: p.GetNumber(), Label: p.GetLabel()}
		}
		out[i] = ce
	}
	return out
}

func presenceUpdate(p *relaypb.PresenceSet) contacts.PresenceUpdate {
	return contacts.PresenceUpdate{IMStatus: p.ImStatus, StatusText: p.StatusText, Activity: p.Activity,
		Nickname: p.Nickname, Signature: p.Signature, Site: p.Site, Visibility: p.Visibility}
}

// PresenceToProto converts a presence for the wire; nil stays nil.
func PresenceToProto(p *contacts.Presence) *relaypb.Presence {
	if p == nil {
		return nil
	}
	out := &relaypb.Presence{Number: string(p.Number), ImStatus: p.IMStatus, StatusText: p.StatusText, Activity: p.Activity,
		Nickname: p.Nickname, Signature: p.Signature, Site: p.Site, Visibility: string(p.Visibility)}
	if !p.UpdatedAt.IsZero() {
		out.UpdatedAt = p.UpdatedAt.UnixMicro()
	}
	return out
}

// Notifier carries the contacts service's pushes to connected clients:
// contacts.Service.SetNotifier(srv.Notifier()).
func (srv *Server) Notifier() contacts.Notifier { return relayNotifier{srv} }

type relayNotifier struct{ srv *Server }

// Notify implements contacts.Notifier: best effort, without waiting for
// the phones. Each recipient's newest endpoint gets the frame; a router
// with a Notify method of its own (the cluster router, batching per node)
// is used for that.
// Recipients not connected are skipped: they get the state at their next
// login's PresenceList.
func (n relayNotifier) Notify(ctx context.Context, to []phonebook.MSISDN, ev contacts.Event) error {
	var f *relaypb.Frame
	switch ev.Kind {
	case contacts.PresenceChanged:
		f = &relaypb.Frame{Body: &relaypb.Frame_PresenceChanged{PresenceChanged: &relaypb.PresenceChanged{Presence: PresenceToProto(ev.Presence)}}}
	case contacts.ContactJoined:
		f = &relaypb.Frame{Body: &relaypb.Frame_ContactJoined{ContactJoined: &relaypb.ContactJoined{Number: string(ev.Number), At: ev.At.UnixMicro()}}}
	default:
		return phonebook.Errorf(phonebook.EInvalid, "relay: no frame for event kind %q", ev.Kind)
	}
	if nr, ok := n.srv.router.(notifyRouter); ok {
		_, err := nr.Notify(ctx, to, f)
		return err
	}
	for _, num := range to {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ep := n.srv.router.Locate(num); ep != nil {
			ep.Push(f)
		}
	}
	return nil
}

// notifyRouter is a Router that pushes one frame to many numbers more
// cheaply than a Locate and Push each: the cluster router sends one
// message per node.
type notifyRouter interface {
	Notify(ctx context.Context, to []phonebook.MSISDN, f *relaypb.Frame) (int, error)
}
