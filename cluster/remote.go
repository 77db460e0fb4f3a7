package cluster

import (
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
)

// remoteEndpoint is a session on another node, as the registry describes
// it. The replica keeps one per entry, so Locate returns the same value
// while the entry is unchanged (the relay compares endpoints).
type remoteEndpoint struct {
	r        *Router
	key      string
	instance string
	info     relay.ConnInfo
	base     string // pb.node.<node>.

	rev       uint64    // guarded by Router.mu
	deadSince time.Time // guarded by Router.mu
}

var _ relay.Endpoint = (*remoteEndpoint)(nil)

func (r *Router) newRemote(k string, ent *registryEntry, rev uint64) *remoteEndpoint {
	return &remoteEndpoint{
		r: r, key: k, instance: ent.Instance, rev: rev,
		base: r.cfg.SubjectPrefix + ".node." + ent.Node + ".",
		info: relay.ConnInfo{
			Number: ent.Number, DeviceID: ent.DeviceID, SessionID: ent.SessionID, Node: ent.Node, Transport: ent.Transport,
			RemoteAddr: ent.RemoteAddr, ConnectedAt: ent.ConnectedAt, ClientVersion: ent.ClientVersion,
		},
	}
}

// Info implements relay.Endpoint.
func (re *remoteEndpoint) Info() relay.ConnInfo { return re.info }

// Offer implements relay.Endpoint: a request to the owning node, whose
// reply says whether the client acknowledged the message. Everything else
// (no responders, a timeout, NATS down) is "not delivered", so the relay
// stores the message.
func (re *remoteEndpoint) Offer(m *relay.Message, done func(bool)) {
	r := re.r
	if r.closed.Load() || !r.nc.IsConnected() {
		r.metrics.offers[offerError].Inc()
		done(false)
		return
	}
	fb, err := marshalFrame(&relaypb.Frame{Body: &relaypb.Frame_Deliver{Deliver: m.Deliver()}})
	var data []byte
	if err == nil {
		env := envelope{numbers: []phonebook.MSISDN{m.To}, device: re.info.DeviceID, frame: fb}
		data, err = env.marshal()
	}
	if err != nil {
		r.metrics.offers[offerError].Inc()
		done(false)
		return
	}
	id := r.offerSeq.Add(1)
	now := time.Now()
	r.omu.Lock()
	r.offers[id] = &offer{done: done, deadline: now.Add(r.cfg.DeliverTimeout), start: now}
	r.omu.Unlock()
	err = r.nc.PublishMsg(&nats.Msg{Subject: re.base + "deliver", Reply: r.replyPrefix + strconv.FormatUint(id, 36), Data: data})
	if err != nil {
		if o := r.takeOffer(id); o != nil {
			r.metrics.offers[offerError].Inc()
			o.done(false)
		}
	}
}

func (r *Router) takeOffer(id uint64) *offer {
	r.omu.Lock()
	defer r.omu.Unlock()
	o := r.offers[id]
	delete(r.offers, id)
	return o
}

// Push implements relay.Endpoint: forwarded best effort.
func (re *remoteEndpoint) Push(f *relaypb.Frame) bool {
	fb, err := marshalFrame(f)
	if err != nil {
		return false
	}
	env := envelope{numbers: []phonebook.MSISDN{re.info.Number}, device: re.info.DeviceID, frame: fb}
	return re.r.publish(re.base+"push", &env)
}

// Wake implements relay.Endpoint: forwarded best effort; the owning node
// also wakes its sessions after any NATS trouble.
func (re *remoteEndpoint) Wake() {
	env := envelope{numbers: []phonebook.MSISDN{re.info.Number}, device: re.info.DeviceID}
	re.r.publish(re.base+"wake", &env)
}

// Close implements relay.Endpoint: the owning node closes the session if it
// is still the one this entry names.
func (re *remoteEndpoint) Close(err error) {
	env := envelope{numbers: []phonebook.MSISDN{re.info.Number}, device: re.info.DeviceID, sessionID: re.info.SessionID}
	if err != nil {
		env.code, env.message = string(phonebook.ErrorCode(err)), phonebook.ErrorMessage(err)
	}
	re.r.publish(re.base+"close", &env)
}

func (r *Router) publish(subj string, env *envelope) bool {
	if r.closed.Load() {
		return false
	}
	data, err := env.marshal()
	if err == nil {
		err = r.nc.Publish(subj, data)
	}
	if err != nil {
		r.metrics.forwardErrors.Inc()
		return false
	}
	r.metrics.forwards.Inc()
	return true
}

// handleReply completes a remote Offer. A 503 "no responders" status from
// the server (the node is gone) has no body and counts as not delivered.
func (r *Router) handleReply(msg *nats.Msg) {
	id, err := strconv.ParseUint(msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:], 36, 64)
	if err != nil {
		return
	}
	o := r.takeOffer(id)
	if o == nil {
		return // timed out already: the message was stored
	}
	ok := len(msg.Data) == 1 && msg.Data[0] == 1
	switch {
	case ok:
		r.metrics.offers[offerDelivered].Inc()
		r.metrics.offerLatency.Observe(time.Since(o.start).Seconds())
	case msg.Header.Get("Status") == "503":
		r.metrics.offers[offerNoResponders].Inc()
	default:
		r.metrics.offers[offerRefused].Inc()
	}
	o.done(ok)
}

var (
	replyDelivered    = []byte{1}
	replyNotDelivered = []byte{0}
)

// handleDeliver offers a message from another node to the local session
// and replies once the client acknowledged it (or will not).
func (r *Router) handleDeliver(msg *nats.Msg) {
	reply := msg.Reply
	answer := func(ok bool) {
		if reply == "" {
			return
		}
		b := replyNotDelivered
		if ok {
			b = replyDelivered
		}
		r.nc.Publish(reply, b)
	}
	var env envelope
	if err := env.unmarshal(msg.Data); err != nil || len(env.numbers) != 1 {
		answer(false)
		return
	}
	f, err := unmarshalFrame(env.frame)
	d := f.GetDeliver()
	if err != nil || d == nil || d.ServerMsgId == "" {
		answer(false)
		return
	}
	ep := r.localEndpoint(env.numbers[0], env.device)
	if ep == nil {
		ep = r.local.Locate(env.numbers[0]) // the device moved here under a new session? any session of the number
	}
	if ep == nil {
		answer(false)
		return
	}
	m := relay.MessageFromDeliver(d, env.numbers[0])
	r.metrics.served.Inc()
	ep.Offer(m, answer)
}

func (r *Router) handlePush(msg *nats.Msg) {
	var env envelope
	if err := env.unmarshal(msg.Data); err != nil {
		return
	}
	f, err := unmarshalFrame(env.frame)
	if err != nil || f.Body == nil {
		return
	}
	for _, n := range env.numbers {
		if ep := r.localEndpoint(n, env.device); ep != nil {
			ep.Push(f)
		}
	}
}

func (r *Router) handleWake(msg *nats.Msg) {
	var env envelope
	if err := env.unmarshal(msg.Data); err != nil {
		return
	}
	for _, n := range env.numbers {
		if ep := r.localEndpoint(n, env.device); ep != nil {
			ep.Wake()
		}
	}
}

func (r *Router) handleClose(msg *nats.Msg) {
	var env envelope
	if err := env.unmarshal(msg.Data); err != nil || len(env.numbers) != 1 || env.device == "" {
		return
	}
	ep := r.localEndpoint(env.numbers[0], env.device)
	if ep == nil || ep.Info().SessionID != env.sessionID {
		return
	}
	code := phonebook.Code(env.code)
	if code == "" {
		code = phonebook.ESessionReplaced
	}
	ep.Close(phonebook.Errorf(code, "%s", env.message))
}
