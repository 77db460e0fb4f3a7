// Package config loads Phonebook's configuration: built-in defaults, then a
// YAML file, then PHONEBOOK_* environment variables, then command-line flags.
// It is the only package that imports viper; the rest of the server receives
// plain values. Unknown keys are errors that name the key, file and line.
package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/mms"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsreply"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/verify"
)

// Config is the whole configuration. docs/configuration.md documents every
// key; config/phonebook.example.yaml is a commented example.
type Config struct {
	Node         string       `mapstructure:"node"`
	Log          Log          `mapstructure:"log"`
	HTTP         HTTP         `mapstructure:"http"`
	Database     Database     `mapstructure:"database"`
	Phone        Phone        `mapstructure:"phone"`
	Session      Session      `mapstructure:"session"`
	Login        Login        `mapstructure:"login"`
	Registration Registration `mapstructure:"registration"`
	Verify       Verify       `mapstructure:"verify"`
	SMSC         SMSC         `mapstructure:"smsc"`
	Relay        Relay        `mapstructure:"relay"`
	Contacts     Contacts     `mapstructure:"contacts"`
	Cluster      Cluster      `mapstructure:"cluster"`
	Limits       Limits       `mapstructure:"limits"`
	SMSReply     SMSReply     `mapstructure:"sms_reply"`
	Admin        Admin        `mapstructure:"admin"`
	MMS          MMS          `mapstructure:"mms"`
	Media        Media        `mapstructure:"media"`
}

// Media configures media uploads and downloads (media/, docs/api.md#media):
// limits, how long media live, and the public links an SMS carries.
type Media struct {
	Dir                        string        `mapstructure:"dir"`    // bodies on a single node
	Bucket                     string        `mapstructure:"bucket"` // JetStream Object Store bucket on a cluster
	MaxBytes                   int64         `mapstructure:"max_bytes"`
	UnsentTTL                  time.Duration `mapstructure:"unsent_ttl"`
	Retention                  time.Duration `mapstructure:"retention"`
	LinkTTL                    time.Duration `mapstructure:"link_ttl"`
	PublicURL                  string        `mapstructure:"public_url"`
	UploadsPerHour             int           `mapstructure:"uploads_per_hour"`
	UploadsPerAddressHour      int           `mapstructure:"uploads_per_address_hour"`
	LinkFailuresPerAddressHour int           `mapstructure:"link_failures_per_address_hour"`
	ThumbnailPixels            int           `mapstructure:"thumbnail_pixels"`
	MaxPerMessage              int           `mapstructure:"max_per_message"`
}

// Limits says how client addresses are grouped by every per-address limit
// (HTTP, relay TCP before Auth, relay UDP): all addresses in one IPv4
// /IPv4Prefix or IPv6 /IPv6Prefix count as one client.
type Limits struct {
	IPv4Prefix int `mapstructure:"ipv4_prefix"`
	IPv6Prefix int `mapstructure:"ipv6_prefix"`
}

// Admin configures the operators' HTTP listener: /admin/*, /metrics and,
// when Pprof is set, /debug/pprof/. The public listener (http.addr) answers
// 404 for those paths.
type Admin struct {
	Addr  string `mapstructure:"addr"`  // empty: no admin listener
	Token string `mapstructure:"token"` // bearer token; required when Addr is not loopback
	Pprof bool   `mapstructure:"pprof"`
}

type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

type HTTP struct {
	Addr         string `mapstructure:"addr"`
	MaxBodyBytes int64  `mapstructure:"max_body_bytes"`
}

type Database struct {
	Driver       string `mapstructure:"driver"` // sqlite or mysql
	DSN          string `mapstructure:"dsn"`
	MaxOpenConns int    `mapstructure:"max_open_conns"`
}

type Phone struct {
	DefaultRegion string `mapstructure:"default_region"`
}

type Session struct {
	TTL time.Duration `mapstructure:"ttl"`
}

type Login struct {
	MaxFailuresPerHour       int `mapstructure:"max_failures_per_hour"`
	MaxRescueFailuresPerDay  int `mapstructure:"max_rescue_failures_per_day"`
	MaxRegistrationsPerIPDay int `mapstructure:"max_registrations_per_ip_day"`
	// Per client network (limits.ipv4_prefix / ipv6_prefix).
	MaxFailuresPerAddressHour      int `mapstructure:"max_failures_per_address_hour"`
	MaxRescueFailuresPerAddressDay int `mapstructure:"max_rescue_failures_per_address_day"`
	// Rescue-password hashes (argon2id, 19 MiB each) at once, and checks
	// waiting for one.
	RescueHashSlots int `mapstructure:"rescue_hash_slots"`
	RescueHashQueue int `mapstructure:"rescue_hash_queue"`
}

type Registration struct {
	TrustClientNumber bool   `mapstructure:"trust_client_number"`
	Header            Header `mapstructure:"header"`
	// RecycleAfter: a number proven with a new SIM after this long without
	// a login starts a new account (the operator gave it to someone else).
	RecycleAfter time.Duration `mapstructure:"recycle_after"`
}

type Header struct {
	Name           string   `mapstructure:"name"`
	TrustedProxies []string `mapstructure:"trusted_proxies"`
	// From a trusted gateway: registrations per number and per identity
	// per day (its address is every subscriber's).
	MaxPerNumberDay   int `mapstructure:"max_per_number_day"`
	MaxPerIdentityDay int `mapstructure:"max_per_identity_day"`
}

// Verify configures number verification by SMS code (method A) and by
// inbound SMS (method C).
type Verify struct {
	CodeTTL            time.Duration   `mapstructure:"code_ttl"`
	MaxChecks          int             `mapstructure:"max_checks"`
	ResendWaits        []time.Duration `mapstructure:"resend_waits"`
	Template           string          `mapstructure:"template"`
	MaxPerNumberDay    int             `mapstructure:"max_per_number_day"`
	MaxPerIPHour       int             `mapstructure:"max_per_ip_hour"`
	MaxPerPrefixHour   int             `mapstructure:"max_per_prefix_hour"`
	AllowCountries     []string        `mapstructure:"allow_countries"`
	DenyCountries      []string        `mapstructure:"deny_countries"`
	ShortNumber        string          `mapstructure:"short_number"`
	TokenTTL           time.Duration   `mapstructure:"token_ttl"`
	TokenPrefix        string          `mapstructure:"token_prefix"`
	SecretKey          string          `mapstructure:"secret_key"`
	MaxTokensPerIPHour int             `mapstructure:"max_tokens_per_ip_hour"`
	MaxPollers         int             `mapstructure:"max_pollers"`
}

// SMSC configures the links to operator SMSCs. With no links, serve runs
// the built-in simulator on loopback only when Simulator is set, and
// refuses to start otherwise.
type SMSC struct {
	Links                 []Link        `mapstructure:"links"`
	Simulator             bool          `mapstructure:"simulator"`
	SimulatorAddr         string        `mapstructure:"simulator_addr"` // a loopback address
	SimulatorReceiptDelay time.Duration `mapstructure:"simulator_receipt_delay"`
	SimulatorHTTP         string        `mapstructure:"simulator_http"` // the simulator's HTTP control (POST /mo, /reply); "" = off; loopback
	Outbox                Outbox        `mapstructure:"outbox"`
}

type Link struct {
	Name                  string        `mapstructure:"name"`
	Addr                  string        `mapstructure:"addr"`
	SystemID              string        `mapstructure:"system_id"`
	Password              string        `mapstructure:"password"`
	SystemType            string        `mapstructure:"system_type"`
	Bind                  string        `mapstructure:"bind"`
	SourceAddr            string        `mapstructure:"source_addr"`
	SourceTON             *uint8        `mapstructure:"source_ton"`
	SourceNPI             *uint8        `mapstructure:"source_npi"`
	TLS                   bool          `mapstructure:"tls"`
	TLSServerName         string        `mapstructure:"tls_server_name"`
	TLSInsecureSkipVerify bool          `mapstructure:"tls_insecure_skip_verify"`
	Window                int           `mapstructure:"window"`
	Binds                 int           `mapstructure:"binds"`
	MaxTPS                float64       `mapstructure:"max_tps"`
	EnquireLink           time.Duration `mapstructure:"enquire_link"`
	RespTimeout           time.Duration `mapstructure:"resp_timeout"`
	ReconnectMin          time.Duration `mapstructure:"reconnect_min"`
	ReconnectMax          time.Duration `mapstructure:"reconnect_max"`
	Prefixes              []string      `mapstructure:"prefixes"`
	ReceiptIDs            string        `mapstructure:"receipt_ids"`
}

// fill sets the settings left out to the smsc package's defaults, so that
// `config print` shows what is in force.
func (l *Link) fill() {
	d := smsc.DefaultLinkConfig()
	if l.Bind == "" {
		l.Bind = d.Bind
	}
	if l.Window <= 0 {
		l.Window = d.Window
	}
	if l.ReceiptIDs == "" {
		l.ReceiptIDs = d.ReceiptIDs
	}
	if l.Binds <= 0 {
		l.Binds = d.Binds
	}
	for _, p := range []struct {
		v *time.Duration
		d time.Duration
	}{
		{&l.EnquireLink, d.EnquireLink}, {&l.RespTimeout, d.RespTimeout},
		{&l.ReconnectMin, d.ReconnectMin}, {&l.ReconnectMax, d.ReconnectMax},
	} {
		if *p.v <= 0 {
			*p.v = p.d
		}
	}
}

type Outbox struct {
	Validity        time.Duration `mapstructure:"validity"`
	MaxAttempts     int           `mapstructure:"max_attempts"`
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
}

type Relay struct {
	TCPAddr          string        `mapstructure:"tcp_addr"`
	UDPAddr          string        `mapstructure:"udp_addr"`
	MaxFrameBytes    int           `mapstructure:"max_frame_bytes"`
	MaxTextBytes     int           `mapstructure:"max_text_bytes"`
	Heartbeat        time.Duration `mapstructure:"heartbeat"`
	IdleTimeout      time.Duration `mapstructure:"idle_timeout"`
	SendQueue        int           `mapstructure:"send_queue"`
	MaxMsgsPerSecond float64       `mapstructure:"max_msgs_per_second"`
	Fallback         string        `mapstructure:"fallback"` // never, unregistered, offline
	FallbackAfter    time.Duration `mapstructure:"fallback_after"`
	FallbackTemplate string        `mapstructure:"fallback_template"`
	// SMS fallbacks queued per sender per clock hour (counted in the
	// store: across connections, restarts and nodes), and how long a
	// fallback may keep failing before its sender gets FAILED, expired.
	FallbackPerHour int           `mapstructure:"fallback_per_hour"`
	FallbackExpiry  time.Duration `mapstructure:"fallback_expiry"`
	// The offline store's bounds.
	MaxOfflinePerRecipient int           `mapstructure:"max_offline_per_recipient"`
	MaxOfflinePerSender    int           `mapstructure:"max_offline_per_sender"`
	OfflineTTL             time.Duration `mapstructure:"offline_ttl"`
	TLSCert                string        `mapstructure:"tls_cert"`
	TLSKey                 string        `mapstructure:"tls_key"`
	ReauthInterval         time.Duration `mapstructure:"reauth_interval"`
	// How often live sessions' waiting messages are looked for in the store.
	StoredRecheck time.Duration `mapstructure:"stored_recheck"`
	// TCP connections not yet authenticated, in all and per client address.
	MaxPendingAuth      int `mapstructure:"max_pending_auth"`
	MaxPendingAuthPerIP int `mapstructure:"max_pending_auth_per_ip"`
	// Failed TCP logins per client address per minute.
	MaxAuthFailuresPerMinute int `mapstructure:"max_auth_failures_per_minute"`
	// The UDP transport's sizes and abuse limits (relay.UDPConfig).
	UDP RelayUDP `mapstructure:"udp"`
}

// RelayUDP tunes the relay's UDP transport (docs/protocol.md section 6).
type RelayUDP struct {
	MaxDatagram  int     `mapstructure:"max_datagram"`
	MaxSessions  int     `mapstructure:"max_sessions"`
	RecvWindow   int     `mapstructure:"recv_window"`
	UnauthRate   float64 `mapstructure:"unauth_rate"`
	UnauthBurst  int     `mapstructure:"unauth_burst"`
	AuthSlots    int     `mapstructure:"auth_slots"`
	LimiterTable int     `mapstructure:"limiter_table"`
}

// UDPConfig is relay.udp in the relay package's terms.
func (c *Config) UDPConfig() relay.UDPConfig {
	u := c.Relay.UDP
	return relay.UDPConfig{MaxDatagram: u.MaxDatagram, MaxSessions: u.MaxSessions, RecvWindow: u.RecvWindow,
		UnauthRate: u.UnauthRate, UnauthBurst: u.UnauthBurst, AuthSlots: u.AuthSlots, LimiterTable: u.LimiterTable}
}

// MMS configures the MMS fallback of media messages (mms/, docs/mms.md):
// the links to operator MMSCs (MM7), the MMS outbox, and who is
// MMS-capable by default. With no links, serve runs the built-in MMSC
// simulator when smsc.simulator is set; otherwise media messages to
// offline phones go as SMS with a download link.
type MMS struct {
	Links []MMSLink `mapstructure:"links"`
	// VASPAddr is where MMSCs post delivery reports and MMS from phones:
	// http://<vasp_addr>/mm7/<link name>. "" = no listener (with the
	// simulator: a free loopback port).
	VASPAddr        string        `mapstructure:"vasp_addr"`
	SimulatorHTTP   string        `mapstructure:"simulator_http"` // the built-in MMSC simulator's HTTP control; "" = off; loopback
	CapablePrefixes []string      `mapstructure:"capable_prefixes"`
	Workers         int           `mapstructure:"workers"`
	Lease           time.Duration `mapstructure:"lease"`
	RetryBase       time.Duration `mapstructure:"retry_base"`
	RetryMax        time.Duration `mapstructure:"retry_max"`
	MaxAttempts     int           `mapstructure:"max_attempts"`
	Validity        time.Duration `mapstructure:"validity"`
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
}

// MMSLink is one MMSC (docs/mms.md#link-keys).
type MMSLink struct {
	Name                  string        `mapstructure:"name"`
	URL                   string        `mapstructure:"url"`
	Username              string        `mapstructure:"username"`
	Password              string        `mapstructure:"password"`
	VASPID                string        `mapstructure:"vasp_id"`
	VASID                 string        `mapstructure:"vas_id"`
	ServiceCode           string        `mapstructure:"service_code"`
	SenderAddress         string        `mapstructure:"sender_address"`
	Prefixes              []string      `mapstructure:"prefixes"`
	MaxMessageBytes       int           `mapstructure:"max_message_bytes"`
	Version               string        `mapstructure:"version"`
	Timeout               time.Duration `mapstructure:"timeout"`
	TLSCA                 string        `mapstructure:"tls_ca"`
	TLSInsecureSkipVerify bool          `mapstructure:"tls_insecure_skip_verify"`
	// The basic auth the MMSC presents when it posts to us ("" = none).
	VASPUsername string `mapstructure:"vasp_username"`
	VASPPassword string `mapstructure:"vasp_password"`
	// The largest request the MMSC may post to us (MO MMS, reports).
	VASPMaxBytes int64 `mapstructure:"vasp_max_bytes"`
	// Status codes this MMSC answers only for phones that cannot take MMS.
	NotCapableCodes []int `mapstructure:"not_capable_codes"`
}

// fill sets the settings left out to the mms package's defaults.
func (l *MMSLink) fill() {
	d := mms.DefaultLinkConfig()
	if l.MaxMessageBytes <= 0 {
		l.MaxMessageBytes = d.MaxMessageBytes
	}
	if l.Version == "" {
		l.Version = d.Version
	}
	if l.Timeout <= 0 {
		l.Timeout = d.Timeout
	}
	if l.VASPMaxBytes <= 0 {
		l.VASPMaxBytes = d.VASPMaxBytes
	}
	if l.NotCapableCodes == nil {
		l.NotCapableCodes = d.NotCapableCodes
	}
}

// SMSReply configures two-way SMS: how replies to fallback SMS find their
// IM user, opt-outs, and the per-recipient daily cap (smsreply/).
type SMSReply struct {
	Mode               string        `mapstructure:"mode"`         // extension or sticky
	ShortNumber        string        `mapstructure:"short_number"` // "" = verify.short_number
	ExtensionDigits    int           `mapstructure:"extension_digits"`
	ExtensionIdle      time.Duration `mapstructure:"extension_idle"`
	StickyWindow       time.Duration `mapstructure:"sticky_window"`
	StickyRule         string        `mapstructure:"sticky_rule"` // most_recent or ask
	OptOutKeywords     []string      `mapstructure:"optout_keywords"`
	OptInKeywords      []string      `mapstructure:"optin_keywords"`
	OptOutText         string        `mapstructure:"optout_text"`
	OptInText          string        `mapstructure:"optin_text"`
	AskText            string        `mapstructure:"ask_text"`
	MaxPerRecipientDay int           `mapstructure:"max_per_recipient_day"`
}

type Contacts struct {
	Visibility       string  `mapstructure:"visibility"`
	LookupCapacity   int     `mapstructure:"lookup_capacity"`
	LookupRefillPerS float64 `mapstructure:"lookup_refill_per_second"`
}

type Cluster struct {
	NATSURL string `mapstructure:"nats_url"`
	// A node silent for DeadAfter counts as gone (its users offline to
	// routing); its sessions are removed, and their users marked offline,
	// PurgeAfter later.
	DeadAfter  time.Duration `mapstructure:"dead_after"`
	PurgeAfter time.Duration `mapstructure:"purge_after"`
	// Namespace lets several clusters share one NATS system: it goes into
	// every subject and bucket name ("" = pb.*, pb_sessions, pb_nodes).
	Namespace string `mapstructure:"namespace"`
	Replicas  int    `mapstructure:"replicas"` // KV bucket replicas (3 on a 3-server NATS cluster)
	Storage   string `mapstructure:"storage"`  // file or memory
	// NATS TLS (a CA to verify the servers; a client certificate) and
	// credentials (a .creds file, or an nkey seed file).
	TLSCA     string `mapstructure:"tls_ca"`
	TLSCert   string `mapstructure:"tls_cert"`
	TLSKey    string `mapstructure:"tls_key"`
	CredsFile string `mapstructure:"creds_file"`
	NKeyFile  string `mapstructure:"nkey_file"`
	// /readyz fails once the node has been cut off from NATS this long.
	ReadyGrace time.Duration `mapstructure:"ready_grace"`
	// At start, how long to keep trying to reach NATS before exiting.
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
}

// Default returns the embedded default: SQLite under ./data, everything on
// loopback. It has no SMSC link and the simulator off, so serve needs
// smsc.links or smsc.simulator (scripts/run sets the latter). A key that a
// package also defaults (relay.send_queue: relay.Config.SendQueue) takes
// the package's default, so that the two cannot differ; the keys only
// serve reads are defaulted here.
func Default() Config {
	host, _ := os.Hostname()
	acc, web, ver := accounts.DefaultConfig(), api.DefaultConfig(), verify.DefaultConfig()
	out, rel, con, clu := smsc.DefaultOutboxConfig(), relay.DefaultConfig(), contacts.DefaultConfig(), cluster.DefaultConfig()
	udp := relay.DefaultUDPConfig()
	storage := "file"
	if clu.MemoryStorage {
		storage = "memory"
	}
	rep := smsreply.DefaultConfig()
	mm := mms.DefaultConfig()
	med := media.DefaultConfig()
	return Config{
		Node:     host,
		Log:      Log{Level: "info", Format: "text"},
		HTTP:     HTTP{Addr: "127.0.0.1:8080", MaxBodyBytes: web.MaxBodyBytes},
		Database: Database{Driver: "sqlite", DSN: "data/phonebook.db", MaxOpenConns: store.DefaultMaxOpenConns},
		Phone:    Phone{DefaultRegion: phonebook.DefaultRegion},
		Session:  Session{TTL: acc.SessionTTL},
		Login: Login{
			MaxFailuresPerHour:       acc.LoginFailuresPerHour,
			MaxRescueFailuresPerDay:  acc.RescueFailuresPerDay,
			MaxRegistrationsPerIPDay: web.MaxRegistrationsPerIP,

			MaxFailuresPerAddressHour:      web.MaxLoginFailuresPerAddressHour,
			MaxRescueFailuresPerAddressDay: web.MaxRescueFailuresPerAddressDay,
			RescueHashSlots:                acc.RescueHashSlots,
			RescueHashQueue:                acc.RescueHashQueue,
		},
		Registration: Registration{
			Header: Header{Name: web.NumberHeader,
				MaxPerNumberDay: web.MaxHeaderPerNumberDay, MaxPerIdentityDay: web.MaxHeaderPerIdentityDay},
			RecycleAfter: 90 * 24 * time.Hour, // accounts: 0 = never
		},
		Verify: Verify{
			CodeTTL:            ver.CodeTTL,
			MaxChecks:          ver.MaxChecks,
			ResendWaits:        ver.ResendWaits,
			Template:           ver.Template,
			MaxPerNumberDay:    ver.MaxPerNumberDay,
			MaxPerIPHour:       ver.MaxPerIPHour,
			MaxPerPrefixHour:   ver.MaxPerPrefixHour,
			ShortNumber:        "10690",
			TokenTTL:           ver.TokenTTL,
			TokenPrefix:        ver.TokenPrefix,
			MaxTokensPerIPHour: ver.MaxTokensPerIPHour,
			MaxPollers:         ver.MaxPollers,
		},
		SMSC: SMSC{
			SimulatorAddr:         "127.0.0.1:0",
			SimulatorReceiptDelay: 500 * time.Millisecond,
			Outbox:                Outbox{Validity: out.DefaultValidity, MaxAttempts: 50, ShutdownTimeout: out.DrainTimeout}, // smsc: 0 = until validity ends
		},
		Relay: Relay{
			TCPAddr: rel.Addr, UDPAddr: rel.Addr,
			MaxFrameBytes: rel.MaxFrameSize, MaxTextBytes: rel.MaxTextBytes,
			Heartbeat: rel.HeartbeatInterval, IdleTimeout: rel.IdleTimeout,
			SendQueue: rel.SendQueue, MaxMsgsPerSecond: rel.SendRate,
			Fallback: string(rel.Fallback), FallbackAfter: rel.FallbackGrace,
			FallbackTemplate:         rel.SMSTemplate,
			FallbackPerHour:          rel.FallbackPerHour,
			FallbackExpiry:           rel.FallbackExpiry,
			MaxOfflinePerRecipient:   rel.MaxOfflinePerRecipient,
			MaxOfflinePerSender:      rel.MaxOfflinePerSender,
			OfflineTTL:               rel.OfflineTTL,
			ReauthInterval:           rel.ReauthInterval,
			StoredRecheck:            rel.StoredRecheck,
			MaxPendingAuth:           rel.MaxPendingAuth,
			MaxPendingAuthPerIP:      rel.MaxPendingAuthPerIP,
			MaxAuthFailuresPerMinute: rel.MaxAuthFailuresPerMinute,
			UDP: RelayUDP{MaxDatagram: udp.MaxDatagram, MaxSessions: udp.MaxSessions, RecvWindow: udp.RecvWindow,
				UnauthRate: udp.UnauthRate, UnauthBurst: udp.UnauthBurst, AuthSlots: udp.AuthSlots, LimiterTable: udp.LimiterTable},
		},
		Cluster: Cluster{DeadAfter: clu.DeadAfter, PurgeAfter: clu.PurgeAfter, Replicas: clu.Replicas, Storage: storage,
			ReadyGrace: 10 * time.Second, ConnectTimeout: clu.ConnectTimeout},
		Contacts: Contacts{
			Visibility:       string(con.Visibility),
			LookupCapacity:   int(con.LookupCapacity),
			LookupRefillPerS: con.LookupRefillPerSecond,
		},
		Admin: Admin{Addr: "127.0.0.1:8090"},
		SMSReply: SMSReply{
			Mode: rep.Mode, ExtensionDigits: rep.ExtensionDigits, ExtensionIdle: rep.ExtensionIdle,
			StickyWindow: rep.StickyWindow, StickyRule: rep.StickyRule,
			OptOutKeywords: rep.OptOutKeywords, OptInKeywords: rep.OptInKeywords,
			OptOutText: rep.OptOutText, OptInText: rep.OptInText, AskText: rep.AskText,
			MaxPerRecipientDay: rep.MaxPerRecipientDay,
		},
		Limits: Limits{IPv4Prefix: web.AddrPrefixes.V4, IPv6Prefix: web.AddrPrefixes.V6},
		MMS: MMS{Links: []MMSLink{}, CapablePrefixes: mm.CapablePrefixes, Workers: mm.Workers, Lease: mm.Lease,
			RetryBase: mm.RetryBase, RetryMax: mm.RetryMax, MaxAttempts: mm.MaxAttempts, Validity: mm.Validity,
			ShutdownTimeout: mm.ShutdownTimeout},
		Media: Media{Dir: med.Dir, Bucket: med.Bucket, MaxBytes: med.MaxBytes, UnsentTTL: med.UnsentTTL, Retention: med.Retention,
			LinkTTL: med.LinkTTL, PublicURL: med.PublicURL, UploadsPerHour: med.UploadsPerHour,
			UploadsPerAddressHour: med.UploadsPerAddressHour, LinkFailuresPerAddressHour: med.LinkFailuresPerAddressHour,
			ThumbnailPixels: med.ThumbnailPixels, MaxPerMessage: med.MaxPerMessage},
	}
}

// Load builds the configuration: defaults, then the file (if path is not
// empty), then PHONEBOOK_* variables, then the flags that were set. The flag
// names are keys with dots and underscores as dashes ("http-addr").
func Load(path string, flags *pflag.FlagSet) (Config, error) {
	v := viper.New()
	setDefaults(v, "", reflect.ValueOf(Default()))
	var raw []byte
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		raw = b
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
			if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
				return Config{}, fmt.Errorf("%s:%s: %s", path, m[1], m[2])
			}
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
	}
	v.SetEnvPrefix("PHONEBOOK")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if flags != nil {
		var err error
		flags.Visit(func(f *pflag.Flag) {
			key := strings.ReplaceAll(f.Name, "-", "_")
			if k, ok := flagKeys[f.Name]; ok {
				key = k
			}
			if !v.IsSet(key) && !isKnownKey(key) {
				return
			}
			if e := v.BindPFlag(key, f); e != nil && err == nil {
				err = e
			}
		})
		if err != nil {
			return Config{}, err
		}
	}
	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		return Config{}, explain(path, raw, err)
	}
	for i := range c.SMSC.Links {
		c.SMSC.Links[i].fill()
	}
	for i := range c.MMS.Links {
		c.MMS.Links[i].fill()
	}
	if err := c.Validate(); err != nil {
		if path != "" {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

var yamlLineRE = regexp.MustCompile(`yaml: line (\d+): (.*)`)

// flagKeys maps command-line flags to keys where the name is not derived.
var flagKeys = map[string]string{
	"http-addr":       "http.addr",
	"database-driver": "database.driver",
	"database-dsn":    "database.dsn",
	"relay-tcp-addr":  "relay.tcp_addr",
	"relay-udp-addr":  "relay.udp_addr",
	"default-region":  "phone.default_region",
	"node":            "node",
	"nats-url":        "cluster.nats_url",
	"admin-addr":      "admin.addr",
	"smsc-simulator":  "smsc.simulator",
}

// knownKeys are the keys of Config, "http.addr" and so on.
var knownKeys = sync.OnceValue(func() map[string]bool {
	keys := map[string]bool{}
	var walk func(prefix string, t reflect.Type)
	walk = func(prefix string, t reflect.Type) {
		for i := 0; i < t.NumField(); i++ {
			key := t.Field(i).Tag.Get("mapstructure")
			if prefix != "" {
				key = prefix + "." + key
			}
			if ft := t.Field(i).Type; ft.Kind() == reflect.Struct {
				walk(key, ft)
			} else {
				keys[key] = true
			}
		}
	}
	walk("", reflect.TypeOf(Config{}))
	return keys
})

func isKnownKey(k string) bool { return knownKeys()[k] }

// setDefaults registers every leaf key with its default so that environment
// variables reach every key (viper only consults the environment for keys
// it knows).
func setDefaults(v *viper.Viper, prefix string, val reflect.Value) {
	t := val.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		key := f.Tag.Get("mapstructure")
		if prefix != "" {
			key = prefix + "." + key
		}
		fv := val.Field(i)
		if f.Type.Kind() == reflect.Struct {
			setDefaults(v, key, fv)
			continue
		}
		v.SetDefault(key, fv.Interface())
	}
}

// envName is the environment variable of a key (PHONEBOOK_SESSION_TTL).
func envName(key string) string {
	return "PHONEBOOK_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// SlogLevel is log.level as a slog level.
func (l Log) SlogLevel() (slog.Level, error) {
	switch strings.ToLower(l.Level) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level: %q is not debug, info, warn or error", l.Level)
}

// MediaConfig is the media package's configuration.
func (c *Config) MediaConfig() media.Config {
	m := c.Media
	return media.Config{Dir: m.Dir, Bucket: m.Bucket, MaxBytes: m.MaxBytes, UnsentTTL: m.UnsentTTL, Retention: m.Retention,
		LinkTTL: m.LinkTTL, PublicURL: m.PublicURL, UploadsPerHour: m.UploadsPerHour, UploadsPerAddressHour: m.UploadsPerAddressHour,
		LinkFailuresPerAddressHour: m.LinkFailuresPerAddressHour, ThumbnailPixels: m.ThumbnailPixels, MaxPerMessage: m.MaxPerMessage}
}

// MMSConfig is the mms package's configuration (node id left to the caller).
func (c *Config) MMSConfig() mms.Config {
	m := c.MMS
	out := mms.Config{CapablePrefixes: m.CapablePrefixes, Workers: m.Workers, Lease: m.Lease, RetryBase: m.RetryBase,
		RetryMax: m.RetryMax, MaxAttempts: m.MaxAttempts, Validity: m.Validity, ShutdownTimeout: m.ShutdownTimeout}
	for _, l := range m.Links {
		out.Links = append(out.Links, mms.LinkConfig{Name: l.Name, URL: l.URL, Username: l.Username, Password: l.Password,
			VASPID: l.VASPID, VASID: l.VASID, ServiceCode: l.ServiceCode, SenderAddress: l.SenderAddress, Prefixes: l.Prefixes,
			MaxMessageBytes: l.MaxMessageBytes, Version: l.Version, Timeout: l.Timeout, TLSCA: l.TLSCA,
			TLSInsecureSkipVerify: l.TLSInsecureSkipVerify, VASPUsername: l.VASPUsername, VASPPassword: l.VASPPassword,
			VASPMaxBytes: l.VASPMaxBytes, NotCapableCodes: l.NotCapableCodes})
	}
	return out
}

// AddrPrefixes is limits.ipv4_prefix and limits.ipv6_prefix.
func (c *Config) AddrPrefixes() phonebook.AddrPrefixes {
	return phonebook.AddrPrefixes{V4: c.Limits.IPv4Prefix, V6: c.Limits.IPv6Prefix}
}

// TrustedProxies parses registration.header.trusted_proxies (CIDRs or single
// addresses).
func (c *Config) TrustedProxies() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range c.Registration.Header.TrustedProxies {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("registration.header.trusted_proxies: %q is not an address or CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
