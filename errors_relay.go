package phonebook

// Error codes of the IM relay protocol (docs/protocol.md). They travel in
// Error frames and in failed SendResults.
const (
	EProtocol        Code = "protocol_error"   // malformed frame; the connection is closed
	EUnknownFrame    Code = "unknown_frame"    // a frame body this server does not know; the connection stays
	ESessionReplaced Code = "session_replaced" // a newer login of the same number and device took over
	ESlowConsumer    Code = "slow_consumer"    // the client did not read fast enough; reconnect
	ETimeout         Code = "timeout"          // no Auth, heartbeat or acknowledgement in time
	EShuttingDown    Code = "shutting_down"    // the server is stopping; reconnect to another node
	EOfflineFull     Code = "offline_full"     // too many stored messages wait for the recipient, or from the sender
	EUndeliverable   Code = "undeliverable"    // the SMSC reported the SMS undeliverable to the handset
)

// DeliverOverhead bounds what a Deliver frame carries besides its text:
// ids (40 and 64 bytes), the sender's number, content type (100 bytes),
// media URL (1,000 bytes), numbers and field tags, about 1,270 bytes.
// relay.max_text_bytes may be at most relay.max_frame_bytes less this, so
// that every accepted message fits the frame that delivers it.
const DeliverOverhead = 1536

// Why an SMS fallback was refused for good; a FAILED Receipt carries them.
const (
	EOptedOut       Code = "opted_out"             // the recipient texted an opt-out keyword (TD, STOP...)
	ERecipientLimit Code = "recipient_daily_limit" // the recipient had as many fallback SMS today as allowed
)
