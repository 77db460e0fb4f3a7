package relay

// This file holds the injection of messages that did not come from a
// client: SMS and MMS that phones without the app sent to the short number.

import (
	"context"
	"crypto/sha256"
	"encoding/base32"
	"strings"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

// InjectSMS accepts a message that came by SMS from a number without the
// app (a reply to a fallback SMS) for the IM user to, with type SMS in the
// chat record. Like a Send, it is offered to the recipient's live session
// (on any node of a cluster) and stored for their next login when that
// session does not acknowledge it; either way it is delivered or durably
// stored when InjectSMS returns nil. It returns the server_msg_id.
func (srv *Server) InjectSMS(ctx context.Context, from, to phonebook.MSISDN, text string) (string, error) {
	return srv.inject(ctx, "", from, to, relaypb.MessageType_SMS, text, nil)
}

// InjectMMS is InjectSMS for a multimedia message that came by MMS (an MO
// MMS to the short number): mediaIDs are uploads owned by from
// (media.Service.Upload), which the message carries to to; text is the
// caption. The chat record's type is MMS.
//
// key, when not empty, names the operator's message (the MMSC link and
// the DeliverReq's TransactionID): the message's id is derived from it,
// and an MMS injected again under the same key (the MMSC sending it
// again because our answer was lost) is not delivered a second time; the
// same id is returned. Clients drop a delivery repeated meanwhile by its
// server_msg_id.
func (srv *Server) InjectMMS(ctx context.Context, key string, from, to phonebook.MSISDN, text string, mediaIDs []string) (string, error) {
	if srv.media == nil {
		return "", phonebook.Errorf(phonebook.EInvalid, "this relay carries no media")
	}
	if key == "" {
		return srv.inject(ctx, "", from, to, relaypb.MessageType_MMS, text, mediaIDs)
	}
	id := injectedID(key)
	release, err := srv.injecting.lock(ctx, id)
	if err != nil {
		return "", err
	}
	defer release()
	if seen, err := srv.knownMessage(ctx, id); err != nil || seen {
		return id, err
	}
	return srv.inject(ctx, id, from, to, relaypb.MessageType_MMS, text, mediaIDs)
}

// Injected reports whether a message was injected under key (see
// InjectMMS), so that its media need not be taken again.
func (srv *Server) Injected(ctx context.Context, key string) (bool, error) {
	return srv.knownMessage(ctx, injectedID(key))
}

// injectedID is the message id of an operator's message named key: "op-"
// and 120 bits of its SHA-256, the same on every node.
func injectedID(key string) string {
	sum := sha256.Sum256([]byte("phonebook injected " + key))
	return "op-" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
}

// knownMessage reports whether a chat record with id exists.
func (srv *Server) knownMessage(ctx context.Context, id string) (bool, error) {
	_, err := srv.store.ChatRecord(ctx, id)
	switch phonebook.ErrorCode(err) {
	case "":
		return true, nil
	case phonebook.ENotFound:
		return false, nil
	}
	return false, err
}

// inject delivers or stores a message that did not come from a client;
// id "" gets a new one.
func (srv *Server) inject(ctx context.Context, id string, from, to phonebook.MSISDN, typ relaypb.MessageType, text string, mediaIDs []string) (string, error) {
	if srv.stopping.Load() {
		return "", phonebook.Errorf(phonebook.EShuttingDown, "the relay is stopping")
	}
	keyed := id != ""
	if !keyed {
		id = srv.newID()
	}
	now := time.Now()
	m := &Message{ID: id, From: from, To: to, Type: typ, Text: text, SentAt: now, accepted: now}
	m.ClientMsgID = m.ID
	if len(mediaIDs) > 0 {
		refs, err := srv.media.Attach(ctx, m.ID, from, to, mediaIDs)
		if err != nil {
			return "", err
		}
		m.Media = refs
	}
	if ep := srv.router.Locate(to); ep != nil {
		acked := make(chan bool, 1)
		ep.Offer(m, func(ok bool) { acked <- ok })
		select {
		case ok := <-acked:
			if ok {
				srv.metrics.outcome(outcomeDelivered)
				rec := store.ChatRecord{ID: m.ID, Sender: from, ClientMsgID: m.ClientMsgID, Receiver: to, Content: text,
					Media: toStoreMedia(m.Media), Type: int(m.Type), SentAt: now, ReceivedAt: time.Now(), State: store.MsgDelivered}
				if !keyed {
					srv.recorder.record(rec)
					return m.ID, nil
				}
				// A keyed message's record is what tells a repeat it was
				// delivered: written now, not in the recorder's next batch.
				if err := srv.store.RecordMessages(context.WithoutCancel(ctx), []store.ChatRecord{rec}); err != nil {
					srv.log.Warn("relay: chat record of an injected message; a repeat of it may be delivered again", "id", m.ID, "err", err)
				}
				return m.ID, nil
			}
		case <-ctx.Done():
			// Stored below under the same id: should the offer still
			// succeed, the client drops the second copy by its id.
		}
	}
	_, err := srv.store.StoreMessages(context.WithoutCancel(ctx), []store.Message{{ID: m.ID, Sender: from, ClientMsgID: m.ClientMsgID,
		Recipient: to, Type: int(m.Type), Text: text, Media: toStoreMedia(m.Media), SentAt: now}})
	if err != nil {
		return "", err
	}
	srv.metrics.outcome(outcomeStored)
	// Logged in meanwhile: the drain delivers it.
	if ep := srv.router.Locate(to); ep != nil {
		ep.Wake()
	}
	return m.ID, nil
}
