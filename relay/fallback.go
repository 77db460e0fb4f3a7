package relay

import (
	"context"
	"errors"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

// SMS fallback: a stored message goes to the SMS outbox at once (recipient
// without an account) or when it falls due (offline_after). An attempt ends
// in one of three ways:
//   - queued: the outbox has it; the sender gets SMS_QUEUED, then the
//     outbox's states (SMSStateChanged);
//   - permanent failure (too long, invalid destination, refused by
//     policy): no more attempts; the sender gets FAILED with the reason;
//   - temporary failure (outbox unavailable, the sender's hourly quota
//     spent): the sweeper tries again with backoff, or at the quota's
//     reset, until FallbackExpiry after the message was sent, then FAILED
//     with reason expired.
// The message itself stays stored for the recipient's next login whatever
// happens to its SMS.

// smsRetry is how long an immediate SMS fallback attempt owns a message
// before the sweeper may try again, and the first retry's backoff.
const smsRetry = time.Minute

// Sweeper batches: due fallbacks per pass, and at most this many of any
// one sender, so that one sender's backlog cannot starve everybody else.
const (
	sweepBatch     = 100
	sweepPerSender = 5
	expireBatch    = 500
)

// smsBackoff is the wait before the next attempt after attempts claimed
// ones: 1, 2, 4... minutes, at most an hour.
func smsBackoff(attempts int) time.Duration {
	return min(smsRetry<<min(max(attempts, 0), 6), time.Hour)
}

// PermanentSMSError reports whether a Fallback's error means the SMS can
// never be sent, so retrying is pointless: its phonebook code is about the
// message or its destination, not about the moment.
func PermanentSMSError(err error) bool {
	switch phonebook.ErrorCode(err) {
	case phonebook.ETooLarge, phonebook.EInvalid, phonebook.EInvalidNumber, phonebook.ENumberNotAllowed, phonebook.EBlocked,
		phonebook.EOptedOut, phonebook.ERecipientLimit:
		return true
	}
	return false
}

// retryAt is when m's fallback is next due: at, but no later than its
// expiry, so that it ends on time.
func (srv *Server) retryAt(m *Message, at time.Time) time.Time {
	if exp := m.SentAt.Add(srv.cfg.FallbackExpiry); exp.Before(at) {
		return exp
	}
	return at
}

func smsQuotaKey(sender phonebook.MSISDN) string { return "relay_sms:" + string(sender) }

// checkSMS says, when the Fallback can tell, why m could never go by SMS.
func (srv *Server) checkSMS(m *Message) error {
	c, ok := srv.fallback.(FallbackChecker)
	if !ok {
		return nil
	}
	if err := c.CheckSMS(srv.fallbackSMS(m)); err != nil && PermanentSMSError(err) {
		return err
	}
	return nil
}

func (srv *Server) fallbackSMS(m *Message) FallbackSMS {
	return FallbackSMS{MessageID: m.ID, From: m.From, To: m.To, Text: srv.FormatSMS(m.From, m.Text), Caption: m.Text, Media: m.Media}
}

// sendSMSAsync starts the immediate fallback of a message just stored, if
// a slot is free; otherwise (or while shutting down) the sweeper sends it
// when its due time (smsRetry after storing) comes.
func (srv *Server) sendSMSAsync(m *Message) {
	srv.smsMu.Lock()
	if srv.smsStop || srv.stopping.Load() {
		srv.smsMu.Unlock()
		return
	}
	select {
	case srv.smsSlots <- struct{}{}:
	default:
		srv.smsMu.Unlock()
		srv.metrics.smsDeferred.Inc()
		return
	}
	srv.sms.Add(1)
	srv.smsMu.Unlock()
	go func() {
		defer srv.sms.Done()
		defer func() { <-srv.smsSlots }()
		srv.sendSMS(m)
	}()
}

// sendSMS makes one attempt at handing a stored message to the SMS outbox.
// The caller owns the attempt (the message's due time is in the future).
func (srv *Server) sendSMS(m *Message) {
	ctx, cancel := context.WithTimeout(srv.ctx, 10*time.Second)
	defer cancel()
	sms := srv.fallbackSMS(m)
	if err := srv.checkSMS(m); err != nil {
		srv.endFallback(ctx, m, err)
		return
	}
	// The quota is counted in the store, so it holds across the sender's
	// connections, this node's restarts and every node; it is taken back
	// unless the SMS is queued.
	key := smsQuotaKey(m.From)
	n, reset, err := srv.store.Hit(ctx, key, time.Hour)
	if err != nil {
		srv.log.Warn("relay: SMS quota", "from", m.From, "err", err)
		return // tried again when due
	}
	if n > int64(srv.cfg.FallbackPerHour) {
		srv.unhit(ctx, key)
		srv.metrics.smsRefused.Inc()
		srv.log.Info("relay: SMS fallback over the sender's hourly quota; retried at its reset", "from", m.From, "id", m.ID, "reset", reset)
		if err := srv.store.RescheduleFallback(ctx, m.ID, srv.retryAt(m, reset)); err != nil {
			srv.log.Warn("relay: reschedule SMS fallback", "id", m.ID, "err", err)
		}
		return
	}
	// The outbox may report the SMS (or MMS) submitted before this
	// goroutine has told the sender it is queued: the outbox's state
	// changes for m wait (SMSStateChanged) until the QUEUED receipt is out.
	unlock, err := srv.queueing.lock(ctx, m.ID)
	if err != nil {
		srv.unhit(ctx, key) // ctx has ended: tried again when due
		return
	}
	defer unlock()
	queued, err := srv.sendFallback(ctx, sms)
	if err != nil {
		srv.unhit(ctx, key)
		if PermanentSMSError(err) {
			srv.endFallback(ctx, m, err)
			return
		}
		srv.log.Warn("relay: SMS fallback; retried later", "id", m.ID, "err", err)
		return
	}
	srv.metrics.outcome(outcomeSMS)
	rec, err := srv.store.MarkFallbackQueued(ctx, m.ID, int(queued))
	switch {
	case err != nil:
		// The outbox has it. The claim stays until its due time, after
		// which the sweeper enqueues it again: the recipient may get the
		// SMS twice, which beats never.
		srv.log.Warn("relay: mark SMS queued", "id", m.ID, "err", err)
	case rec.State != int(queued):
		// A newer state is recorded already (another node's outbox
		// submitted it, or the recipient acknowledged it): the sender is
		// told that instead, never a QUEUED after it.
		return
	}
	srv.receipt(m.From, m.ID, m.ClientMsgID, queued, nil)
}

// sendFallback hands sms to the Fallback and returns the state its sender
// is told: SMS_QUEUED, or what a MediaFallback says (MMS_QUEUED).
func (srv *Server) sendFallback(ctx context.Context, sms FallbackSMS) (relaypb.MessageState, error) {
	if mf, ok := srv.fallback.(MediaFallback); ok {
		return mf.SendFallback(ctx, sms)
	}
	return relaypb.MessageState_SMS_QUEUED, srv.fallback.SendSMS(ctx, sms)
}

// unhit gives back one SMS counted against a sender's hourly quota. It
// runs even when ctx has ended (a fallback that timed out or was
// canceled must still give its quota back), within a few seconds of its own.
func (srv *Server) unhit(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.store.Unhit(ctx, key, time.Hour); err != nil {
		srv.log.Warn("relay: SMS quota not given back", "key", key, "err", err)
	}
}

// endFallback gives up m's SMS for good: nothing more is due, its record
// is FAILED (unless its recipient acknowledged it meanwhile) and its
// sender gets a FAILED receipt with the reason. The message stays stored
// for the recipient's client.
func (srv *Server) endFallback(ctx context.Context, m *Message, reason error) {
	rec, err := srv.store.FailFallback(ctx, m.ID)
	if err != nil {
		// The due time stays: the sweeper comes back to it.
		srv.log.Warn("relay: end SMS fallback", "id", m.ID, "err", err)
		return
	}
	srv.metrics.smsFailed.WithLabelValues(string(phonebook.ErrorCode(reason))).Inc()
	srv.log.Info("relay: SMS fallback failed for good", "id", m.ID, "from", m.From, "to", m.To, "reason", reason)
	if rec.State == store.MsgFailed {
		srv.receipt(rec.Sender, rec.ID, rec.ClientMsgID, relaypb.MessageState_FAILED, smsFailure(reason))
	}
}

// smsFailure is the reason a sender reads in a FAILED receipt: the code
// stays (opted_out, request_too_large, expired...), the message says it
// was the SMS that failed.
func smsFailure(err error) error {
	return phonebook.Errorf(phonebook.ErrorCode(err), "the SMS fallback failed: %s", phonebook.ErrorMessage(err))
}

// SMSState maps an SMS outbox state (smsc.OutboxEvent.State: "submitted",
// "delivered", "undeliverable", "expired", "failed") to the relay's.
func SMSState(outboxState string) (relaypb.MessageState, bool) {
	switch outboxState {
	case "submitted":
		return relaypb.MessageState_SMS_SUBMITTED, true
	case "delivered":
		return relaypb.MessageState_SMS_DELIVERED, true
	case "undeliverable", "expired", "failed":
		return relaypb.MessageState_FAILED, true
	}
	return 0, false
}

// SMSFailure is the reason a sender reads for an SMS the outbox gave up
// on, from its state and error text: code expired for "expired",
// undeliverable for "undeliverable", unavailable for anything else.
func SMSFailure(outboxState, detail string) error {
	code := phonebook.EUnavailable
	switch outboxState {
	case "expired":
		code = phonebook.EExpired
	case "undeliverable":
		code = phonebook.EUndeliverable
	}
	return phonebook.Errorf(code, "%s: %s", outboxState, detail)
}

// SMSOutboxStateChanged is SMSStateChanged in the outbox's terms: its
// state name (see SMSState) and, for a failure, its error text. A state
// the relay has no counterpart for is ignored.
func (srv *Server) SMSOutboxStateChanged(ctx context.Context, messageID, outboxState, detail string) error {
	st, ok := SMSState(outboxState)
	if !ok {
		return nil
	}
	var reason error
	if st == relaypb.MessageState_FAILED {
		reason = SMSFailure(outboxState, detail)
	}
	return srv.SMSStateChanged(ctx, messageID, st, reason)
}

// SMSStateChanged is the SMS and MMS outboxes' callback: the message's
// stored state is updated and its sender, if connected, gets a Receipt.
// reason says why a FAILED one failed (the outbox's error: the SMSC's or
// MMSC's status, a receipt's "undeliverable", expiry); nil for other
// states.
func (srv *Server) SMSStateChanged(ctx context.Context, messageID string, state relaypb.MessageState, reason error) error {
	switch state {
	case relaypb.MessageState_SMS_QUEUED, relaypb.MessageState_SMS_SUBMITTED, relaypb.MessageState_SMS_DELIVERED, relaypb.MessageState_FAILED,
		relaypb.MessageState_MMS_QUEUED, relaypb.MessageState_MMS_SUBMITTED, relaypb.MessageState_MMS_DELIVERED:
	default:
		return phonebook.Errorf(phonebook.EInvalid, "%s is not an SMS or MMS state", state)
	}
	// Told after the sender heard QUEUED, when this node is queueing it.
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	srv.queueing.wait(wctx, messageID)
	cancel()
	rec, err := srv.store.SetMessageState(ctx, messageID, int(state))
	if err != nil {
		return err
	}
	if rec.State != int(state) {
		// A newer state was recorded first (a delivery report applied
		// before the submit it follows was told): the sender already has
		// it, or is about to, and must not be told an older one after it.
		return nil
	}
	if state == relaypb.MessageState_FAILED {
		if reason == nil {
			reason = errors.New("the SMS could not be delivered")
		}
		reason = smsFailure(reason)
	} else {
		reason = nil
	}
	srv.receipt(rec.Sender, rec.ID, rec.ClientMsgID, state, reason)
	return nil
}

// sweeper sends the SMS fallbacks that fell due (offline_after messages
// whose recipient stayed offline past the grace, retries of failed
// attempts), ends those past FallbackExpiry, and deletes stored messages
// past OfflineTTL.
func (srv *Server) sweeper() {
	defer srv.bg.Done()
	t := time.NewTicker(srv.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-srv.quitBG:
			return
		case now := <-t.C:
			if srv.fallback != nil && srv.cfg.Fallback != FallbackNever {
				srv.sweepFallbacks(now)
			}
			srv.expireStored(now)
		}
	}
}

func (srv *Server) sweepFallbacks(now time.Time) {
	due, err := srv.store.DueSMS(srv.ctx, now, sweepPerSender, sweepBatch)
	if err != nil {
		srv.log.Warn("relay: due SMS", "err", err)
		return
	}
	for i := range due {
		select {
		case <-srv.quitBG:
			return
		default:
		}
		m := storedToMessage(due[i])
		if srv.router.Locate(m.To) != nil {
			continue // connected (appearing offline or not): the drain delivers it
		}
		if !now.Before(m.SentAt.Add(srv.cfg.FallbackExpiry)) {
			srv.endFallback(srv.ctx, m, phonebook.Errorf(phonebook.EExpired,
				"no SMS could be queued within %s of sending", srv.cfg.FallbackExpiry))
			continue
		}
		// Claiming first keeps two sweepers (other nodes) from sending
		// the same SMS; a failed attempt is retried after the backoff.
		ok, err := srv.store.ClaimFallback(srv.ctx, m.ID, due[i].SMSDueAt, srv.retryAt(m, now.Add(smsBackoff(due[i].SMSAttempts))))
		if err != nil || !ok {
			continue
		}
		srv.sendSMS(m)
	}
}

// expireStored deletes stored messages older than OfflineTTL; senders of
// those that had not gone by SMS get FAILED, expired.
func (srv *Server) expireStored(now time.Time) {
	for {
		gone, err := srv.store.ExpireMessages(srv.ctx, now.Add(-srv.cfg.OfflineTTL), expireBatch)
		if err != nil {
			if srv.ctx.Err() == nil {
				srv.log.Warn("relay: expire stored messages", "err", err)
			}
			return
		}
		for _, g := range gone {
			srv.metrics.expired.Inc()
			if g.Failed {
				srv.receipt(g.Sender, g.ID, g.ClientMsgID, relaypb.MessageState_FAILED, phonebook.Errorf(phonebook.EExpired,
					"%s did not fetch the message within %s; it was deleted", g.Recipient, srv.cfg.OfflineTTL))
			}
		}
		if len(gone) > 0 {
			srv.log.Info("relay: stored messages expired", "count", len(gone), "ttl", srv.cfg.OfflineTTL)
		}
		if len(gone) < expireBatch {
			return
		}
	}
}

// failUndeliverable ends a stored message that can never be delivered to
// its recipient's connection (its frame is too large): it is deleted and
// its sender gets FAILED with the reason, so it neither blocks the
// messages behind it nor stays forever.
func (srv *Server) failUndeliverable(m *Message, reason error) {
	srv.metrics.outcome(outcomeFailed)
	srv.log.Warn("relay: message cannot be delivered", "id", m.ID, "from", m.From, "to", m.To, "reason", reason)
	if !m.Offline {
		// Not stored yet: its sender is waiting for the SendResult.
		srv.dedup.forget(m.From, m.ClientMsgID, m.entry)
		srv.answer(m, &relaypb.SendResult{ClientMsgId: m.ClientMsgID, State: relaypb.MessageState_FAILED,
			Error: errorFrame(reason).GetError()})
		return
	}
	rec, err := srv.store.FailStored(srv.ctx, m.ID)
	if err != nil {
		if phonebook.ErrorCode(err) != phonebook.ENotFound {
			srv.log.Warn("relay: fail stored message", "id", m.ID, "err", err)
		}
		return
	}
	srv.receipt(rec.Sender, rec.ID, rec.ClientMsgID, relaypb.MessageState_FAILED, reason)
}

// frameTooLarge is the reason a message cannot be delivered over a
// connection whose frames are at most max bytes.
func frameTooLarge(size, max int) error {
	return phonebook.Errorf(phonebook.ETooLarge, "the message needs a %d-byte frame; the recipient's connection carries at most %d", size, max)
}
