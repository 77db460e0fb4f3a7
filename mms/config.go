package mms

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/phonebook/phonebook/mm7"
)

// Config is the MMS configuration (config key mms). Zero values mean the
// defaults of DefaultConfig.
type Config struct {
	Links []LinkConfig
	// NodeID names this node's claims: unique among running nodes, stable
	// across restarts [hostname].
	NodeID          string
	Workers         int           // MMS submitted at once [8]
	Lease           time.Duration // how long a claim lasts before another node may take it [5m]
	Poll            time.Duration // how often an idle outbox looks for due messages [1s]
	RetryBase       time.Duration // first retry after a temporary failure [5s]
	RetryMax        time.Duration // longest retry delay [5m]
	MaxAttempts     int           // attempts before an MMS goes as SMS instead; 0 = until it expires [20]
	Validity        time.Duration // an MMS not accepted by an MMSC within this expires [24h]
	Retention       time.Duration // finished messages are deleted after [7 days]
	ShutdownTimeout time.Duration // how long shutdown waits for submits in flight [30s]
	// CapablePrefixes: numbers under these E.164 prefixes are MMS-capable
	// unless a source says otherwise; the others are not.
	CapablePrefixes []string
}

// LinkConfig is one MMSC (config mms.links[]).
type LinkConfig struct {
	Name          string
	URL           string // the MMSC's MM7 endpoint, http:// or https://
	Username      string // HTTP basic auth; "" = none
	Password      string
	VASPID        string
	VASID         string
	ServiceCode   string
	SenderAddress string   // the short number MMS come from; "" = the MMSC's default
	Prefixes      []string // destination prefixes this link serves; none = default route
	// MaxMessageBytes is the largest MMS the MMSC takes; larger images are
	// adapted to it [300 KiB].
	MaxMessageBytes int
	Version         string        // MM7 schema: REL-5-MM7-1-2 or REL-6-MM7-1-4 [REL-5-MM7-1-2]
	Timeout         time.Duration // per request [30s]
	// TLS for https URLs: a CA file for an MMSC with a private CA, and
	// (never in production) skipping verification.
	TLSCA                 string
	TLSInsecureSkipVerify bool
	// The basic auth the MMSC must present when it posts delivery reports
	// and MO MMS to us ("" = none).
	VASPUsername, VASPPassword string
	// VASPMaxBytes bounds a request the MMSC posts to us (an MO MMS with
	// its media, a delivery report); a larger one is answered with a
	// fault [4 MiB].
	VASPMaxBytes int64
	// NotCapableCodes are status codes this MMSC answers only when the
	// recipient's phone cannot take MMS; such an answer marks the number
	// not MMS-capable. Answers whose text says so count without them.
	NotCapableCodes []int
}

// Default values.
const (
	DefaultMaxMessageBytes = 300 << 10
	DefaultVersion         = "REL-5-MM7-1-2"
	// MaxVASPBytes is the most vasp_max_bytes may be.
	MaxVASPBytes = 64 << 20
)

// DefaultConfig returns the values a zero Config stands for.
func DefaultConfig() Config {
	var c Config
	c.defaults()
	return c
}

// DefaultLinkConfig returns the values a zero LinkConfig stands for.
func DefaultLinkConfig() LinkConfig {
	var l LinkConfig
	l.defaults()
	return l
}

func (c *Config) defaults() {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.NodeID == "" {
		c.NodeID, _ = os.Hostname()
		if c.NodeID == "" {
			c.NodeID = "phonebook"
		}
	}
	if len(c.NodeID) > 64 {
		c.NodeID = c.NodeID[:64]
	}
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 20
	}
	def(&c.Lease, 5*time.Minute)
	def(&c.Poll, time.Second)
	def(&c.RetryBase, 5*time.Second)
	def(&c.RetryMax, 5*time.Minute)
	def(&c.Validity, 24*time.Hour)
	def(&c.Retention, 7*24*time.Hour)
	def(&c.ShutdownTimeout, 30*time.Second)
	if c.CapablePrefixes == nil {
		c.CapablePrefixes = []string{}
	}
	for i := range c.Links {
		c.Links[i].defaults()
	}
}

func (l *LinkConfig) defaults() {
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if l.Version == "" {
		l.Version = DefaultVersion
	}
	if l.Timeout <= 0 {
		l.Timeout = 30 * time.Second
	}
	if l.VASPMaxBytes <= 0 {
		l.VASPMaxBytes = mm7.DefaultMaxBytes
	}
	if l.NotCapableCodes == nil {
		l.NotCapableCodes = []int{}
	}
}

// Validate reports what New refuses.
func (c Config) Validate() error {
	c.defaults()
	if c.MaxAttempts < 0 {
		return fmt.Errorf("mms: max_attempts %d must not be negative", c.MaxAttempts)
	}
	for _, p := range c.CapablePrefixes {
		if err := validPrefix(p); err != nil {
			return fmt.Errorf("mms: capable_prefixes: %w", err)
		}
	}
	names := map[string]bool{}
	for i, l := range c.Links {
		if l.Name == "" || l.URL == "" {
			return fmt.Errorf("mms.links[%d]: name and url are required", i)
		}
		if names[l.Name] {
			return fmt.Errorf("mms %s: two links have this name", l.Name)
		}
		names[l.Name] = true
		u, err := url.Parse(l.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("mms %s: url %q is not an http:// or https:// URL", l.Name, l.URL)
		}
		switch l.Version {
		case "REL-5-MM7-1-2", "REL-6-MM7-1-4":
		default:
			return fmt.Errorf("mms %s: version %q is not REL-5-MM7-1-2 or REL-6-MM7-1-4", l.Name, l.Version)
		}
		if l.MaxMessageBytes < 8<<10 {
			return fmt.Errorf("mms %s: max_message_bytes %d is under 8 KiB", l.Name, l.MaxMessageBytes)
		}
		for _, p := range l.Prefixes {
			if err := validPrefix(p); err != nil {
				return fmt.Errorf("mms %s: prefixes: %w", l.Name, err)
			}
		}
		if l.VASPMaxBytes < 64<<10 || l.VASPMaxBytes > MaxVASPBytes {
			return fmt.Errorf("mms %s: vasp_max_bytes %d is not between 64 KiB and %d MiB", l.Name, l.VASPMaxBytes, MaxVASPBytes>>20)
		}
		for _, code := range l.NotCapableCodes {
			// Success (1xxx) never means not capable.
			if code < 2000 || code > 4999 {
				return fmt.Errorf("mms %s: not_capable_codes: %d is not an MM7 error status (2000-4999)", l.Name, code)
			}
		}
	}
	return nil
}

func validPrefix(p string) error {
	if len(p) < 2 || p[0] != '+' || strings.Trim(p[1:], "0123456789") != "" {
		return fmt.Errorf("prefix %q: want '+' and digits, like \"+86\"", p)
	}
	return nil
}

// longestPrefix returns the length of the longest of prefixes that n
// starts with, or -1.
func longestPrefix(prefixes []string, n string) int {
	best := -1
	for _, p := range prefixes {
		if strings.HasPrefix(n, p) && len(p) > best {
			best = len(p)
		}
	}
	return best
}
