package media

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

// Config configures the media service. Zero values mean the defaults
// (DefaultConfig).
type Config struct {
	// Dir is where DirBlobs keeps bodies on a single node; on a cluster
	// the JetStream Object Store bucket Bucket is used instead.
	Dir    string
	Bucket string
	// MaxBytes is the largest upload.
	MaxBytes int64
	// UnsentTTL: an upload no message carries is deleted this long after
	// it was made.
	UnsentTTL time.Duration
	// Retention: a medium a message carries stays readable by the
	// recipient this long after the message was sent, then (when nothing
	// else holds it) is deleted.
	Retention time.Duration
	// LinkTTL is how long a download link in an SMS works (Link with
	// ttl 0).
	LinkTTL time.Duration
	// PublicURL is the address of the public HTTP listener as phones
	// reach it ("https://pb.example.com"); links are PublicURL/m/<token>.
	PublicURL string
	// UploadsPerHour per user and UploadsPerAddressHour per client
	// address (network, phonebook.AddrPrefixes) limit uploads.
	UploadsPerHour        int
	UploadsPerAddressHour int
	// ThumbnailPixels is the longer side of an image's thumbnail.
	ThumbnailPixels int
	// LinkFailuresPerAddressHour: wrong /m/ links one client address
	// may try per hour before it is refused (links cannot be guessed, and
	// guessing is not let to go on).
	LinkFailuresPerAddressHour int
	// MaxPerMessage is how many media one message may carry.
	MaxPerMessage int
}

// janitorInterval is how often Run deletes expired media.
const janitorInterval = time.Minute

// DefaultConfig returns the values a zero Config stands for.
func DefaultConfig() Config {
	var c Config
	c.setDefaults()
	return c
}

func (c *Config) setDefaults() {
	if c.Dir == "" {
		c.Dir = "data/media"
	}
	if c.Bucket == "" {
		c.Bucket = "phonebook-media"
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 1 << 20
	}
	if c.UnsentTTL <= 0 {
		c.UnsentTTL = 24 * time.Hour
	}
	if c.Retention <= 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.LinkTTL <= 0 {
		c.LinkTTL = 7 * 24 * time.Hour
	}
	if c.PublicURL == "" {
		c.PublicURL = "http://127.0.0.1:8080"
	}
	if c.UploadsPerHour <= 0 {
		c.UploadsPerHour = 60
	}
	if c.UploadsPerAddressHour <= 0 {
		c.UploadsPerAddressHour = 600
	}
	if c.ThumbnailPixels <= 0 {
		c.ThumbnailPixels = 160
	}
	if c.LinkFailuresPerAddressHour <= 0 {
		c.LinkFailuresPerAddressHour = 30
	}
	if c.MaxPerMessage <= 0 {
		c.MaxPerMessage = 10
	}
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		return fmt.Errorf("media.public_url %q must start with http:// or https://", c.PublicURL)
	}
	if c.MaxPerMessage > 100 {
		return fmt.Errorf("media.max_per_message %d is over 100", c.MaxPerMessage)
	}
	if c.MaxBytes > 64<<20 {
		return fmt.Errorf("media.max_bytes %d is over 64 MiB; media are held in memory while they are checked", c.MaxBytes)
	}
	return nil
}

// Store is what the service keeps in the database (*store.DB).
type Store interface {
	CreateMedia(ctx context.Context, m store.Media) error
	Media(ctx context.Context, id string) (store.Media, error)
	AttachMedia(ctx context.Context, msgID string, sender, recipient phonebook.MSISDN, ids []string, now, until time.Time) ([]store.Media, error)
	MediaReadable(ctx context.Context, id string, reader phonebook.MSISDN, now time.Time) (bool, error)
	CreateMediaLink(ctx context.Context, l store.MediaLink) error
	MediaLink(ctx context.Context, tokenHash string) (store.MediaLink, error)
	ExpiredMedia(ctx context.Context, now time.Time, limit int) ([]string, error)
	DeleteMedia(ctx context.Context, ids []string, now time.Time) ([]string, error)
	Hits(ctx context.Context, hits []store.CounterHit) ([]int64, []time.Time, error)
}

var _ Store = (*store.DB)(nil)

// Service stores, authorises and serves media.
type Service struct {
	cfg   Config
	store Store
	blobs Blobs
	log   *slog.Logger
	now   func() time.Time
}

// New builds the service over a metadata store and a blob store.
func New(cfg Config, st Store, blobs Blobs, log *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if st == nil || blobs == nil {
		return nil, errors.New("media: a store and a blob store are required")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{cfg: cfg, store: st, blobs: blobs, log: log, now: func() time.Time { return time.Now().UTC() }}, nil
}

// Config returns the configuration in force, defaults filled in.
func (s *Service) Config() Config { return s.cfg }

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID is 128 random bits, 26 characters of lower-case base32.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// ValidID reports whether id has the form of a media id (26 characters
// a-z, 2-7); anything else is answered not_found without a lookup.
func ValidID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= 'a' && c <= 'z' || c >= '2' && c <= '7') {
			return false
		}
	}
	return true
}

// thumbID is the blob name of a medium's thumbnail.
func thumbID(id string) string { return id + "-t" }

// validBlobName: a media id or a thumbnail's name, nothing that could
// name a path elsewhere.
func validBlobName(name string) bool { return ValidID(strings.TrimSuffix(name, "-t")) }

func fromStore(m store.Media) Info {
	return Info{ID: m.ID, Owner: m.Owner, ContentType: m.ContentType, Size: m.Size, SHA256: m.SHA256, Name: m.Name,
		Width: m.Width, Height: m.Height, Thumbnail: m.Thumbnail, Created: m.Created, Expires: m.Expires}
}

// cleanName keeps the last path element of a client's file name, at most
// 100 bytes of valid UTF-8 without control characters.
func cleanName(name string) string {
	name = path.Base(strings.ReplaceAll(name, `\`, "/"))
	if name == "." || name == "/" {
		return ""
	}
	name = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || r == '"' {
			return -1
		}
		return r
	}, name)
	for len(name) > 100 {
		_, n := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-n]
	}
	return name
}

// Upload stores body as a new medium of owner. body is read to at most
// Config.MaxBytes (more is ETooLarge); its type is sniffed from the
// bytes and must be one of AllowedTypes (else EMediaType). addrKey names
// the client's network for the per-address limit ("" skips it).
func (s *Service) Upload(ctx context.Context, owner phonebook.MSISDN, addrKey, name string, body io.Reader) (Info, error) {
	if err := s.Admit(ctx, owner, addrKey); err != nil {
		return Info{}, err
	}
	return s.UploadAdmitted(ctx, owner, name, body)
}

// UploadAdmitted is Upload after Admit: the HTTP handler counts an upload
// before it reads the body, so that a refused client costs no memory.
func (s *Service) UploadAdmitted(ctx context.Context, owner phonebook.MSISDN, name string, body io.Reader) (Info, error) {
	data, err := io.ReadAll(io.LimitReader(body, s.cfg.MaxBytes+1))
	if err != nil {
		return Info{}, err
	}
	if int64(len(data)) > s.cfg.MaxBytes {
		return Info{}, phonebook.Errorf(phonebook.ETooLarge, "the medium is larger than %d bytes (media.max_bytes)", s.cfg.MaxBytes)
	}
	if len(data) == 0 {
		return Info{}, phonebook.Errorf(phonebook.EInvalid, "the medium is empty")
	}
	ct, err := Sniff(data)
	if err != nil {
		return Info{}, err
	}
	now := s.now().Truncate(time.Microsecond)
	sum := sha256.Sum256(data)
	m := store.Media{
		ID: newID(), Owner: owner, ContentType: ct, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]),
		Name: cleanName(name), Created: now, Expires: now.Add(s.cfg.UnsentTTL),
	}
	var thumb []byte
	if isImage(ct) {
		w, h, t, err := imageFacts(data, s.cfg.ThumbnailPixels)
		if err != nil {
			return Info{}, phonebook.Errorf(phonebook.EInvalid, "the %s cannot be decoded: %v", ct, err)
		}
		m.Width, m.Height = w, h
		if t != nil {
			thumb, m.Thumbnail = t, true
		}
	}
	if _, err := s.blobs.Put(ctx, m.ID, bytes.NewReader(data)); err != nil {
		return Info{}, fmt.Errorf("media: storing the body: %w", err)
	}
	if thumb != nil {
		if _, err := s.blobs.Put(ctx, thumbID(m.ID), bytes.NewReader(thumb)); err != nil {
			s.blobs.Delete(context.WithoutCancel(ctx), m.ID)
			return Info{}, fmt.Errorf("media: storing the thumbnail: %w", err)
		}
	}
	if err := s.store.CreateMedia(ctx, m); err != nil {
		ctx := context.WithoutCancel(ctx)
		s.blobs.Delete(ctx, m.ID)
		s.blobs.Delete(ctx, thumbID(m.ID))
		return Info{}, err
	}
	return fromStore(m), nil
}

// Admit counts one upload against owner's and the address's hourly
// allowance (media.uploads_per_hour, media.uploads_per_address_hour;
// addrKey "" skips the address) and refuses it past either with
// ERateLimited. It counts first, so concurrent uploads cannot all slip
// through.
func (s *Service) Admit(ctx context.Context, owner phonebook.MSISDN, addrKey string) error {
	hits := []store.CounterHit{{Name: "media:user:" + string(owner), Window: time.Hour}}
	limits := []int{s.cfg.UploadsPerHour}
	if addrKey != "" {
		hits = append(hits, store.CounterHit{Name: "media:addr:" + addrKey, Window: time.Hour})
		limits = append(limits, s.cfg.UploadsPerAddressHour)
	}
	counts, resets, err := s.store.Hits(ctx, hits)
	if err != nil {
		return err
	}
	for i, c := range counts {
		if c > int64(limits[i]) {
			who := "this user"
			if i == 1 {
				who = "this address"
			}
			e := phonebook.Errorf(phonebook.ERateLimited, "%s may upload %d media an hour", who, limits[i])
			e.RetryAfter = resets[i]
			return e
		}
	}
	return nil
}

// Info returns a medium's description (ENotFound when there is none or it
// has expired). No authorisation: for server-side use.
func (s *Service) Info(ctx context.Context, id string) (Info, error) {
	if !ValidID(id) {
		return Info{}, phonebook.Errorf(phonebook.ENotFound, "no such media")
	}
	m, err := s.store.Media(ctx, id)
	if phonebook.ErrorCode(err) == phonebook.ENotFound || err == nil && !m.Expires.After(s.now()) {
		return Info{}, phonebook.Errorf(phonebook.ENotFound, "no such media")
	}
	if err != nil {
		return Info{}, err
	}
	return fromStore(m), nil
}

// Open returns a medium's body and description. No authorisation: for
// server-side use (the MMS outbox); handsets go through OpenFor.
func (s *Service) Open(ctx context.Context, id string) (io.ReadSeekCloser, Info, error) {
	info, err := s.Info(ctx, id)
	if err != nil {
		return nil, Info{}, err
	}
	r, err := s.blobs.Open(ctx, id)
	if err != nil {
		return nil, Info{}, err
	}
	return r, info, nil
}

// Readable reports whether reader may read medium id: it uploaded it, or
// a message carried it to reader. An id reader may not read is answered
// as ENotFound, as if there were none: knowing an id gives nothing away.
func (s *Service) Readable(ctx context.Context, id string, reader phonebook.MSISDN) error {
	if !ValidID(id) {
		return phonebook.Errorf(phonebook.ENotFound, "no such media")
	}
	ok, err := s.store.MediaReadable(ctx, id, reader, s.now())
	if err != nil {
		return err
	}
	if !ok {
		return phonebook.Errorf(phonebook.ENotFound, "no media %s for you: only its uploader and the recipients of a message carrying it may read it", id)
	}
	return nil
}

// OpenFor opens medium id for reader (Readable), or its thumbnail.
func (s *Service) OpenFor(ctx context.Context, id string, reader phonebook.MSISDN, thumbnail bool) (io.ReadSeekCloser, Info, error) {
	if err := s.Readable(ctx, id, reader); err != nil {
		return nil, Info{}, err
	}
	return s.open(ctx, id, thumbnail)
}

func (s *Service) open(ctx context.Context, id string, thumbnail bool) (io.ReadSeekCloser, Info, error) {
	info, err := s.Info(ctx, id)
	if err != nil {
		return nil, Info{}, err
	}
	blob := id
	if thumbnail {
		if !info.Thumbnail {
			return nil, Info{}, phonebook.Errorf(phonebook.ENotFound, "media %s has no thumbnail (only images do)", id)
		}
		blob = thumbID(id)
	}
	r, err := s.blobs.Open(ctx, blob)
	if err != nil {
		return nil, Info{}, err
	}
	return r, info, nil
}

// Attach validates that sender may send media ids (its own uploads, not
// expired, at most Config.MaxPerMessage, no repeats) and records that
// message msgID carries them to recipient: from then on recipient may
// read them, and they live at least Config.Retention. It returns their
// descriptions for the Deliver frame. It implements relay.Media.
func (s *Service) Attach(ctx context.Context, msgID string, sender, recipient phonebook.MSISDN, ids []string) ([]*relaypb.MediaRef, error) {
	if len(ids) > s.cfg.MaxPerMessage {
		return nil, phonebook.Errorf(phonebook.EInvalid, "a message carries at most %d media (media.max_per_message), not %d", s.cfg.MaxPerMessage, len(ids))
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if !ValidID(id) {
			return nil, phonebook.Errorf(phonebook.ENotFound, "media %q: no such upload of yours", id)
		}
		if seen[id] {
			return nil, phonebook.Errorf(phonebook.EInvalid, "media %q is named twice", id)
		}
		seen[id] = true
	}
	now := s.now()
	ms, err := s.store.AttachMedia(ctx, msgID, sender, recipient, ids, now, now.Add(s.cfg.Retention))
	if err != nil {
		return nil, err
	}
	refs := make([]*relaypb.MediaRef, len(ms))
	for i, m := range ms {
		refs[i] = fromStore(m).Ref()
	}
	return refs, nil
}

// Link makes a short, unguessable link to media ids of message msgID for
// recipient, for an SMS to a phone that cannot take MMS. It works for ttl
// (Config.LinkTTL when 0); the media live at least as long. A GET on it
// serves a small download page (no session needed: the link is the
// secret; only its hash is stored).
func (s *Service) Link(ctx context.Context, msgID string, recipient phonebook.MSISDN, ids []string, ttl time.Duration) (string, error) {
	if len(ids) == 0 {
		return "", phonebook.Errorf(phonebook.EInvalid, "a link needs at least one medium")
	}
	if ttl <= 0 {
		ttl = s.cfg.LinkTTL
	}
	tok := newLinkToken()
	now := s.now()
	err := s.store.CreateMediaLink(ctx, store.MediaLink{
		TokenHash: hashToken(tok), MessageID: msgID, Recipient: recipient, MediaIDs: ids,
		Created: now, Expires: now.Add(ttl),
	})
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(s.cfg.PublicURL, "/") + "/m/" + tok, nil
}

// newLinkToken is 100 random bits, 20 characters of lower-case base32:
// short enough for an SMS, too many to guess (and guesses are limited).
func newLinkToken() string {
	var b [13]byte
	rand.Read(b[:])
	return strings.ToLower(idEncoding.EncodeToString(b[:]))[:20]
}

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte("phonebook media link " + tok))
	return hex.EncodeToString(sum[:])
}

// ResolveLink returns the media a link token gives and when the link
// expires: EExpired once it has run out, ENotFound for a token that never
// was (or whose media are gone).
func (s *Service) ResolveLink(ctx context.Context, tok string) ([]Info, time.Time, error) {
	if len(tok) != 20 {
		return nil, time.Time{}, phonebook.Errorf(phonebook.ENotFound, "no such link")
	}
	l, err := s.store.MediaLink(ctx, hashToken(tok))
	if phonebook.ErrorCode(err) == phonebook.ENotFound {
		return nil, time.Time{}, phonebook.Errorf(phonebook.ENotFound, "no such link")
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	if !l.Expires.After(s.now()) {
		return nil, time.Time{}, phonebook.Errorf(phonebook.EExpired, "this link expired at %s", l.Expires.Format(time.RFC3339))
	}
	infos := make([]Info, 0, len(l.MediaIDs))
	for _, id := range l.MediaIDs {
		info, err := s.Info(ctx, id)
		if err != nil {
			return nil, time.Time{}, err
		}
		infos = append(infos, info)
	}
	return infos, l.Expires, nil
}

// OpenLink opens the n-th medium (from 0) of a link, or its thumbnail.
func (s *Service) OpenLink(ctx context.Context, tok string, n int, thumbnail bool) (io.ReadSeekCloser, Info, error) {
	infos, _, err := s.ResolveLink(ctx, tok)
	if err != nil {
		return nil, Info{}, err
	}
	if n < 0 || n >= len(infos) {
		return nil, Info{}, phonebook.Errorf(phonebook.ENotFound, "this link has %d media", len(infos))
	}
	return s.open(ctx, infos[n].ID, thumbnail)
}

// Expire deletes up to limit media whose time has passed (bodies first,
// then metadata) and returns how many it deleted.
func (s *Service) Expire(ctx context.Context, limit int) (int, error) {
	now := s.now()
	ids, err := s.store.ExpiredMedia(ctx, now, limit)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	// Forget the rows first (only those still expired), then the bodies:
	// a body without a row is garbage; a row without a body would be a
	// medium that fails to open.
	deleted, err := s.store.DeleteMedia(ctx, ids, now)
	if err != nil {
		return 0, err
	}
	for _, id := range deleted {
		if err := s.blobs.Delete(ctx, id); err != nil {
			s.log.Warn("media: deleting an expired body", "id", id, "err", err)
		}
		s.blobs.Delete(ctx, thumbID(id))
	}
	return len(deleted), nil
}

// Run deletes expired media every minute until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		for {
			n, err := s.Expire(ctx, 500)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("media: janitor", "err", err)
			}
			if n < 500 {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
