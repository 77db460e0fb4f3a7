package mms

import (
	"context"

	"github.com/phonebook/phonebook"
)

// How Fallback sent a media message.
const (
	ViaMMS = "mms" // queued in the MMS outbox
	ViaSMS = "sms" // queued as an SMS with the caption and a download link
)

// Conversations is implemented by an SMS fallback that routes replies
// (smsreply.Service): NoteConversation records that from writes to to and
// returns the source address a reply comes back to ("" = the link's).
type Conversations interface {
	NoteConversation(ctx context.Context, from, to phonebook.MSISDN) (string, error)
}

// Send is the relay's fallback for a message with media to a phone that
// is offline or has no app: an MMS when the recipient is MMS-capable and
// an MMSC link serves its number, otherwise (or when the MMS later fails
// for good, or cannot be adapted: see the outbox) an SMS with the text and
// a short, expiring download link. It returns ViaMMS or ViaSMS once the
// message is durable.
func (o *Outbox) Send(ctx context.Context, msg Message) (string, error) {
	if len(msg.Media) == 0 {
		return "", phonebook.Errorf(phonebook.EInvalid, "mms: a message without media goes by SMS")
	}
	if o.Route(msg.To) != nil {
		v, err := o.caps.Capable(ctx, msg.To)
		if err != nil {
			return "", err
		}
		if v.Capable {
			if c, ok := o.sms.(Conversations); ok && msg.From != "" {
				// A reply MMS (or SMS) to the address it comes from finds
				// the sender.
				src, err := c.NoteConversation(ctx, msg.From, msg.To)
				if err != nil {
					return "", err
				}
				msg.source = src
			}
			if _, err := o.Enqueue(ctx, msg); err != nil {
				return "", err
			}
			return ViaMMS, nil
		}
	}
	if o.sms == nil || o.media == nil {
		return "", phonebook.Errorf(phonebook.EUnavailable, "mms: no SMS fallback for media")
	}
	url, err := o.media.Link(ctx, msg.Ref, msg.To, msg.Media, 0)
	if err != nil {
		return "", err
	}
	if err := o.sms.SendFallback(ctx, msg.Ref, msg.From, msg.To, SMSText(msg.Text, url)); err != nil {
		return "", err
	}
	return ViaSMS, nil
}
