package mms

import (
	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

// RelayState maps an outbox event of a relay fallback (Kind "fallback",
// Ref the relay's message id) to the state its sender is told, with the
// reason of a FAILED one; ok is false for events the sender does not see
// (to_sms: the SMS states follow).
func RelayState(ev Event) (state relaypb.MessageState, reason error, ok bool) {
	if ev.Kind != "fallback" || ev.Ref == "" {
		return 0, nil, false
	}
	switch ev.State {
	case store.MMSSubmitted:
		return relaypb.MessageState_MMS_SUBMITTED, nil, true
	case store.MMSDelivered:
		return relaypb.MessageState_MMS_DELIVERED, nil, true
	case store.MMSSMS:
		return relaypb.MessageState_SMS_QUEUED, nil, true
	case store.MMSExpired:
		return relaypb.MessageState_FAILED, phonebook.Errorf(phonebook.EExpired, "the MMS expired: %s", ev.Error), true
	case store.MMSFailed:
		return relaypb.MessageState_FAILED, phonebook.Errorf(phonebook.EUndeliverable, "the MMS failed: %s", ev.Error), true
	}
	return 0, nil, false
}
