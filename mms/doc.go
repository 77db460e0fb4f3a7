// Package mms sends media messages as MMS over MM7 and decides when they go
// as SMS instead. It owns the durable MMS outbox (leased claims, retries
// with backoff, expiry, delivery reports: the SMS outbox's guarantees for
// MMS), routing over several MMSC links by destination prefix, who is
// MMS-capable (the handset's report, operator provisioning, a default per
// prefix, the MMSC's answers), content adaptation to a link's size limit,
// the relay's fallback for messages with media (MMS when the recipient is
// capable, otherwise an SMS with the caption and a download link), and
// inbound MMS to the short number, which reach the IM user a conversation
// belongs to. docs/mms.md is the user's guide.
package mms
