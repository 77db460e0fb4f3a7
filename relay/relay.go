// Package relay is Phonebook's IM relay (patent units 619 and 623): handsets
// hold a connection to it, authenticate with a session token, and exchange
// messages addressed by phone number. It forwards a message to the
// recipient's live connection, stores it when the recipient is offline and
// delivers it at their next login, keeps the chat record table, and falls
// back to SMS through a durable outbox for recipients who are not registered
// or stay offline.
//
// The session logic is transport-agnostic: a session consumes decoded frames
// and produces frames into a bounded queue; tcp.go moves them over TCP with
// a 4-byte length prefix (frame.go), udp.go over UDP datagrams with
// acknowledgements and retransmission (relay/rudp). Routing between nodes goes through the
// Router interface; router_local.go is the single-node implementation.
package relay

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
	"github.com/phonebook/phonebook/store"
)

// Authenticator checks a session token issued by the login API and returns
// whose it is. Errors carry phonebook codes (EUnauthorized, EBlocked...),
// which the client sees in the Error frame.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (number phonebook.MSISDN, deviceID string, err error)
}

// TokenChecker is implemented by Authenticators that can tell, for many
// tokens at once (by their hashes, phonebook.TokenHash), which no longer
// authenticate (revoked, expired, or the account blocked). With one, the
// relay closes the live sessions whose token stopped being valid: within
// Config.ReauthInterval, and at once for a number passed to Server.Recheck.
type TokenChecker interface {
	InvalidTokenHashes(ctx context.Context, hashes [][]byte) (invalid [][]byte, err error)
}

// UDPAuthenticator is implemented by Authenticators that can find a
// session by the public id a UDP login names its token by
// (phonebook.UDPTokenID), returning the token's hash, with which the relay
// checks the login's proof (rudp.Proof): over UDP the token never
// travels. Without one, the UDP transport refuses every login.
type UDPAuthenticator interface {
	AuthenticateUDP(ctx context.Context, udpID []byte) (number phonebook.MSISDN, deviceID string, tokenHash []byte, err error)
}

// AuthFunc adapts a function to Authenticator (AccountsAuth adapts the
// accounts service).
type AuthFunc func(ctx context.Context, token string) (phonebook.MSISDN, string, error)

// Authenticate implements Authenticator.
func (f AuthFunc) Authenticate(ctx context.Context, token string) (phonebook.MSISDN, string, error) {
	return f(ctx, token)
}

// Directory answers whether a number has a Phonebook account.
type Directory interface {
	IsRegistered(ctx context.Context, number phonebook.MSISDN) (bool, error)
}

// FallbackSMS is an IM message to be sent as an SMS instead.
type FallbackSMS struct {
	MessageID string // the relay's server_msg_id: the outbox reports states against it (smsc.SMS.Ref)
	From      phonebook.MSISDN
	To        phonebook.MSISDN
	Text      string // already formatted with the sender shown (Config.SMSTemplate)
	// Caption is the message's own text, unformatted (the caption of its
	// media, if any).
	Caption string
	// Media the message carries, every field filled (relaypb.MediaRef):
	// the fallback chooses an MMS or an SMS with a download link
	// (media.Service.Link). Empty for a text message.
	Media []*relaypb.MediaRef
}

// Fallback enqueues an SMS durably; when SendSMS returns nil the SMS must
// survive a crash. It reports progress back through Server.SMSStateChanged,
// or SMSOutboxStateChanged in the outbox's state names. An error whose code says the
// SMS can never be sent (PermanentSMSError: too long, invalid destination,
// the recipient opted out or had their daily allowance) ends the fallback
// with a FAILED receipt carrying that reason; any other is retried with
// backoff until Config.FallbackExpiry.
type Fallback interface {
	SendSMS(ctx context.Context, sms FallbackSMS) error
}

// MediaFallback is implemented by Fallbacks that can send a message with
// media as an MMS (the mms package): SendFallback is used instead of
// SendSMS, with the same contract, and returns the state the sender is
// told: MMS_QUEUED when it went to the MMS outbox, SMS_QUEUED when it went
// as an SMS (with a download link). Later states come through
// Server.SMSStateChanged, which takes the MMS states too.
type MediaFallback interface {
	SendFallback(ctx context.Context, sms FallbackSMS) (relaypb.MessageState, error)
}

// FallbackFuncs adapts functions that take an SMS's fields, e.g.
// smsreply.Service's SendFallback and CheckFallback (the SMS side does not
// import the relay), to Fallback and FallbackChecker.
type FallbackFuncs struct {
	Send  func(ctx context.Context, messageID string, from, to phonebook.MSISDN, text string) error
	Check func(messageID string, from, to phonebook.MSISDN, text string) error // nil: every SMS can be sent
	// Media takes a message with media (the MMS side: an MMS or an SMS
	// with a download link) and returns the state its sender is told; nil:
	// media messages go by Send, as text.
	Media func(ctx context.Context, sms FallbackSMS) (relaypb.MessageState, error)
}

var (
	_ Fallback        = FallbackFuncs{}
	_ FallbackChecker = FallbackFuncs{}
	_ MediaFallback   = FallbackFuncs{}
)

// SendFallback implements MediaFallback.
func (f FallbackFuncs) SendFallback(ctx context.Context, s FallbackSMS) (relaypb.MessageState, error) {
	if f.Media != nil && len(s.Media) > 0 {
		return f.Media(ctx, s)
	}
	return relaypb.MessageState_SMS_QUEUED, f.SendSMS(ctx, s)
}

// SendSMS implements Fallback.
func (f FallbackFuncs) SendSMS(ctx context.Context, s FallbackSMS) error {
	return f.Send(ctx, s.MessageID, s.From, s.To, s.Text)
}

// CheckSMS implements FallbackChecker.
func (f FallbackFuncs) CheckSMS(s FallbackSMS) error {
	if f.Check == nil {
		return nil
	}
	return f.Check(s.MessageID, s.From, s.To, s.Text)
}

// FallbackChecker is implemented by Fallbacks that can tell, without
// sending, whether an SMS could ever be sent (its length, its
// destination). With one, a message to a number without an account that
// could only go by SMS, and cannot, is refused at Send.
type FallbackChecker interface {
	CheckSMS(sms FallbackSMS) error
}

// Store is what the relay needs from persistence; *store.DB implements it.
type Store interface {
	StoreMessages(ctx context.Context, msgs []store.Message) ([]store.StoreResult, error)
	RecordMessages(ctx context.Context, recs []store.ChatRecord) error
	OfflineMessages(ctx context.Context, recipient phonebook.MSISDN, afterSeq int64, limit int) ([]store.Message, error)
	AckMessages(ctx context.Context, recipient phonebook.MSISDN, ids []string, at time.Time) ([]store.AckedMessage, error)
	DueSMS(ctx context.Context, now time.Time, perSender, limit int) ([]store.Message, error)
	ClaimFallback(ctx context.Context, id string, due, retryAt time.Time) (bool, error)
	RescheduleFallback(ctx context.Context, id string, at time.Time) error
	MarkFallbackQueued(ctx context.Context, id string, state int) (store.ChatRecord, error)
	SetMessageState(ctx context.Context, id string, state int) (store.ChatRecord, error)
	OfflineCounts(ctx context.Context, senders, recipients []phonebook.MSISDN) (bySender, byRecipient map[phonebook.MSISDN]int, err error)
	ExpireMessages(ctx context.Context, before time.Time, limit int) ([]store.ExpiredMessage, error)
	FailStored(ctx context.Context, id string) (store.ChatRecord, error)
	FailFallback(ctx context.Context, id string) (store.ChatRecord, error)
	ChatRecord(ctx context.Context, id string) (store.ChatRecord, error)
	// Per-user counters shared by every node (the SMS quota).
	Hit(ctx context.Context, name string, window time.Duration) (int64, time.Time, error)
	Unhit(ctx context.Context, name string, window time.Duration) error
}

var _ Store = (*store.DB)(nil)

// Message is a message in flight between relay nodes and sessions.
type Message struct {
	ID          string
	From        phonebook.MSISDN
	ClientMsgID string
	To          phonebook.MSISDN
	Type        relaypb.MessageType
	Text        string
	Media       []*relaypb.MediaRef // every field filled
	SentAt      time.Time
	Offline     bool  // delivered from the offline store
	ViaSMS      bool  // also sent as SMS
	Seq         int64 // offline store order, for stored messages

	// Set on the node that accepted the message.
	entry    *dedupEntry
	accepted time.Time
	holder   *session // holds an inflight slot until answered
	// undeliverable: its frame is too large for any connection; it was
	// failed to its sender (failUndeliverable) and must not be stored.
	undeliverable bool
}

// Deliver is the frame body that hands m to its recipient.
func (m *Message) Deliver() *relaypb.Deliver {
	return &relaypb.Deliver{
		ServerMsgId: m.ID, From: string(m.From), ClientMsgId: m.ClientMsgID, Text: m.Text, Type: m.Type,
		SentAt: m.SentAt.UnixMicro(), Offline: m.Offline, ViaSms: m.ViaSMS, Media: m.Media,
	}
}

// MessageFromDeliver is the message a Deliver carries to number to (another
// node's, in a cluster).
func MessageFromDeliver(d *relaypb.Deliver, to phonebook.MSISDN) *Message {
	return &Message{
		ID: d.ServerMsgId, From: phonebook.MSISDN(d.From), ClientMsgID: d.ClientMsgId, To: to, Type: d.Type, Text: d.Text,
		Media: d.Media, SentAt: time.UnixMicro(d.SentAt),
		Offline: d.Offline, ViaSMS: d.ViaSms,
	}
}

// ConnInfo is one row of the connection table (patent fig. 6): who is
// connected, from where, to which node, over what.
type ConnInfo struct {
	Number        phonebook.MSISDN `json:"number"`
	DeviceID      string           `json:"device_id"`
	SessionID     string           `json:"session_id"`
	Node          string           `json:"node"`
	Transport     string           `json:"transport"`
	RemoteAddr    string           `json:"remote_addr"`
	ConnectedAt   time.Time        `json:"connected_at"`
	ClientVersion string           `json:"client_version,omitempty"`
}

// Endpoint is a place a number can be reached: a local session, or (with a
// cluster router) a session on another node.
type Endpoint interface {
	Info() ConnInfo
	// Offer hands a message to the client without blocking. done is called
	// exactly once: true when the client acknowledged it, false when it will
	// not be (connection gone, client too slow, no ack within AckTimeout).
	Offer(m *Message, done func(delivered bool))
	// Push sends a frame (a receipt, a send result) best effort.
	Push(f *relaypb.Frame) bool
	// Wake tells the endpoint that new messages wait for it in the offline store.
	Wake()
	// Close ends the session with an Error frame carrying err's code.
	Close(err error)
}

// Router keeps the connection table and finds endpoints by number.
// LocalRouter serves one node. A cluster router (NATS) would keep the table
// across nodes, for example:
//   - Attach/Detach publish the ConnInfo on "relay.conn.<number>" and keep
//     a replicated table; Attach returns a remote endpoint for an older
//     login on another node, whose Close asks that node to end it;
//   - Locate returns a local session, or a remote endpoint for the owning
//     node, whose Offer sends the message as a request to
//     "relay.node.<node>.deliver" and calls done with the reply (the
//     client's ack on that node) or false on timeout; Push and Wake
//     publish to the same node;
//   - the store stays shared, so offline messages, their drain and the
//     SMS sweeper (which claims rows) need nothing more.
//
// Implementations must be safe for concurrent use, and Locate is on every
// message's path: keep it to a map lookup.
type Router interface {
	// Attach adds ep; when the same (number, device) was attached it returns
	// the old endpoint, which the caller closes.
	Attach(ep Endpoint) (replaced Endpoint)
	// Detach removes ep if it is still the attached one.
	Detach(ep Endpoint)
	// Locate returns the newest endpoint of number, or nil when offline.
	Locate(number phonebook.MSISDN) Endpoint
	// Connections lists the table.
	Connections() []ConnInfo
}

// StoredWaker is a Router that wakes a recipient itself after a message
// for them was stored: the cluster router, which must make sure the
// wake-up reaches the recipient's node even across a NATS outage. Other
// routers get Locate(n).Wake().
type StoredWaker interface {
	WakeStored(number phonebook.MSISDN)
}

// FallbackPolicy says when a message goes out as SMS.
type FallbackPolicy string

const (
	FallbackNever        FallbackPolicy = "never"         // stored only
	FallbackUnregistered FallbackPolicy = "unregistered"  // SMS at once to numbers without an account
	FallbackOfflineAfter FallbackPolicy = "offline_after" // also SMS when a member stays offline past FallbackGrace ("offline" is accepted too)
)

// Config tunes the relay. Zero values mean the defaults in parentheses.
type Config struct {
	Addr              string        // listen address for ListenAndServe (DefaultAddr)
	NodeID            string        // this node's name in the connection table (hostname)
	DefaultRegion     string        // region for national-format recipient numbers ("CN")
	MaxFrameSize      int           // (64 KiB)
	AuthTimeout       time.Duration // first frame must be Auth within this (10s)
	HeartbeatInterval time.Duration // told to clients in AuthOK (20s: under common 30s NAT timeouts)
	IdleTimeout       time.Duration // close a connection silent this long (2×HeartbeatInterval + 5s)
	AckTimeout        time.Duration // online delivery waits this long for DeliverAck before storing (5s)
	WriteTimeout      time.Duration // one socket write may block this long (10s)
	SendQueue         int           // frames queued per connection before it counts as slow (256)
	SocketWriteBuffer int           // SO_SNDBUF per connection in bytes (0: the OS's autotuning)
	MaxTextBytes      int           // UTF-8 bytes per message text (16384); at most MaxFrameSize - phonebook.DeliverOverhead
	SendRate          float64       // Send frames per second per user, over all their connections to this node (100)
	SendBurst         int           // (2×SendRate)
	DedupWindow       int           // recent client_msg_ids remembered per sender (64); stored ones are always recognised
	StoreBatch        int           // messages per offline-store transaction (512)
	Fallback          FallbackPolicy
	FallbackGrace     time.Duration // for offline_after (5m)
	SMSTemplate       string        // ("[Phonebook] {from}: {text}")
	FallbackPerHour   int           // SMS fallbacks queued per sender per clock hour, counted in the store across nodes and restarts (60): SMS costs money and reaches strangers
	FallbackExpiry    time.Duration // a fallback not queued this long after its message was sent ends FAILED, expired (24h)
	SweepInterval     time.Duration // how often due SMS fallbacks and expired messages are looked for (1s)
	// The offline store's bounds: messages waiting for one recipient
	// (10000) and from one sender (10000; beyond either, Send fails with
	// offline_full), and how long one waits before it is deleted and its
	// sender gets FAILED, expired (720h).
	MaxOfflinePerRecipient int
	MaxOfflinePerSender    int
	OfflineTTL             time.Duration

	ReauthInterval time.Duration // how often live sessions' tokens are checked again, with a TokenChecker (1m)
	// StoredRecheck: how often the relay looks in the offline store for
	// messages waiting for its live sessions (10s). A message stored for a
	// connected recipient is normally delivered at once by a wake-up; this
	// is the bound when every wake-up was lost (a NATS partition, a NATS
	// server's death while interest moves to another server).
	StoredRecheck time.Duration
	// TCP connections accepted and not yet authenticated (each has
	// AuthTimeout to send Auth): in all (4096) and per client address
	// (256). Beyond them a connection gets Error rate_limited and closes.
	MaxPendingAuth      int
	MaxPendingAuthPerIP int
	// MaxAuthFailuresPerMinute: failed TCP logins (bad, revoked or expired
	// token, blocked account) per client address per minute, burst as many
	// (120). Beyond it the address's new connections get rate_limited
	// until its bucket refills.
	MaxAuthFailuresPerMinute int
	// AddrPrefixes groups client addresses for the per-address limits
	// (TCP before Auth, UDP): an IPv4 /32 and an IPv6 /64 by default.
	AddrPrefixes phonebook.AddrPrefixes
}

// DefaultAddr is where the relay listens, on TCP and UDP, unless
// configured: loopback, port 5222.
const DefaultAddr = "127.0.0.1:5222"

// DefaultConfig returns the values a zero Config stands for.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

// Validate reports settings NewServer refuses.
func (c Config) Validate() error {
	c.setDefaults()
	switch c.Fallback {
	case FallbackNever, FallbackUnregistered, FallbackOfflineAfter, "offline":
	default:
		return fmt.Errorf("relay: unknown fallback policy %q (want never, unregistered or offline)", c.Fallback)
	}
	if c.MaxTextBytes+phonebook.DeliverOverhead > c.MaxFrameSize {
		return fmt.Errorf("relay: max text of %d bytes does not fit a frame of %d bytes (a Deliver carries up to %d bytes more)",
			c.MaxTextBytes, c.MaxFrameSize, phonebook.DeliverOverhead)
	}
	if c.IdleTimeout <= c.HeartbeatInterval {
		return fmt.Errorf("relay: idle timeout %s must be longer than the heartbeat interval %s, or idle clients are dropped",
			c.IdleTimeout, c.HeartbeatInterval)
	}
	return nil
}

func (c *Config) setDefaults() {
	c.AddrPrefixes = c.AddrPrefixes.WithDefaults()
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.DefaultRegion == "" {
		c.DefaultRegion = phonebook.DefaultRegion
	}
	defInt(&c.MaxFrameSize, wire.DefaultMaxFrameSize)
	def(&c.AuthTimeout, 10*time.Second)
	def(&c.HeartbeatInterval, 20*time.Second)
	def(&c.IdleTimeout, 2*c.HeartbeatInterval+5*time.Second)
	def(&c.AckTimeout, 5*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	defInt(&c.SendQueue, 256)
	defInt(&c.MaxTextBytes, min(16<<10, c.MaxFrameSize-phonebook.DeliverOverhead))
	if c.SendRate <= 0 {
		c.SendRate = 100
	}
	defInt(&c.SendBurst, int(2*c.SendRate))
	defInt(&c.DedupWindow, 64)
	defInt(&c.StoreBatch, 512)
	if c.Fallback == "" {
		c.Fallback = FallbackUnregistered
	}
	def(&c.FallbackGrace, 5*time.Minute)
	if c.SMSTemplate == "" {
		c.SMSTemplate = "[Phonebook] {from}: {text}"
	}
	def(&c.SweepInterval, time.Second)
	def(&c.ReauthInterval, time.Minute)
	def(&c.StoredRecheck, 10*time.Second)
	defInt(&c.MaxPendingAuth, 4096)
	defInt(&c.MaxPendingAuthPerIP, 256)
	defInt(&c.MaxAuthFailuresPerMinute, 120)
	defInt(&c.FallbackPerHour, 60)
	def(&c.FallbackExpiry, 24*time.Hour)
	defInt(&c.MaxOfflinePerRecipient, 10000)
	defInt(&c.MaxOfflinePerSender, 10000)
	def(&c.OfflineTTL, 30*24*time.Hour)
}

// Media checks and attaches the media a Send names (media.Service): ids
// must be sender's own uploads, not expired; once Attach returns, message
// msgID carries them and recipient may download them. It returns their
// descriptions, every field filled, in the order of ids. Errors carry
// phonebook codes (not_found for an id that is not the sender's).
type Media interface {
	Attach(ctx context.Context, msgID string, sender, recipient phonebook.MSISDN, ids []string) ([]*relaypb.MediaRef, error)
}

// Deps are the relay's collaborators. Auth and Store are required.
type Deps struct {
	Auth      Authenticator
	Store     Store
	Directory Directory // nil: every number counts as registered
	Fallback  Fallback  // nil: no SMS fallback
	Router    Router    // nil: NewLocalRouter
	Contacts  Contacts  // nil: no contacts or presence over the relay (presence.go)
	Media     Media     // nil: a Send with media is refused
	Logger    *slog.Logger
	Metrics   prometheus.Registerer // nil: not registered
}

func toStoreMedia(refs []*relaypb.MediaRef) []store.MessageMedia {
	if len(refs) == 0 {
		return nil
	}
	out := make([]store.MessageMedia, len(refs))
	for i, r := range refs {
		out[i] = store.MessageMedia{ID: r.Id, ContentType: r.ContentType, Size: int64(r.Size), Name: r.Name,
			Width: int(r.Width), Height: int(r.Height), Thumbnail: r.Thumbnail}
	}
	return out
}

func fromStoreMedia(ms []store.MessageMedia) []*relaypb.MediaRef {
	if len(ms) == 0 {
		return nil
	}
	out := make([]*relaypb.MediaRef, len(ms))
	for i, m := range ms {
		out[i] = &relaypb.MediaRef{Id: m.ID, ContentType: m.ContentType, Size: uint64(m.Size), Name: m.Name,
			Width: uint32(m.Width), Height: uint32(m.Height), Thumbnail: m.Thumbnail}
	}
	return out
}

// mediaType is the message type a message with media but no type gets,
// from its first medium.
func mediaType(refs []*relaypb.MediaRef) relaypb.MessageType {
	if len(refs) == 0 {
		return relaypb.MessageType_TEXT
	}
	switch ct := refs[0].ContentType; {
	case strings.HasPrefix(ct, "image/"):
		return relaypb.MessageType_IMAGE
	case strings.HasPrefix(ct, "audio/"):
		return relaypb.MessageType_AUDIO
	case strings.HasPrefix(ct, "video/"):
		return relaypb.MessageType_VIDEO
	}
	return relaypb.MessageType_FILE
}
