// Package config loads Phonebook's configuration: built-in defaults, then a
// YAML file, then PHONEBOOK_* environment variables, then command-line flags.
// It is the only package that imports viper; the rest of the server receives
// plain values. Unknown keys are errors that name the key, file and line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/contacts"
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
	storage := "file"
	if clu.MemoryStorage {
		storage = "memory"
	}
	rep := smsreply.DefaultConfig()
	mm := mms.DefaultConfig()
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

// explain turns the decoder's errors into one line per bad key, each with
// file and line: unknown keys, and values of the wrong type.
func explain(path string, raw []byte, err error) error {
	var leaves []*mapstructure.DecodeError
	decodeLeaves(err, &leaves)
	where := func(key string) string {
		if line := lineOf(raw, key); line > 0 {
			return fmt.Sprintf("%s:%d", path, line)
		}
		if env := envName(key); os.Getenv(env) != "" {
			return env
		}
		if path != "" {
			return "config " + path
		}
		return "config"
	}
	var lines []string
	for _, de := range leaves {
		name := de.Name()
		if strings.HasPrefix(name, "config.") {
			name = "" // mapstructure names the top level by its type
		}
		cause := de.Unwrap()
		if keys, ok := strings.CutPrefix(cause.Error(), "has invalid keys: "); ok {
			for _, k := range strings.Split(keys, ", ") {
				if name != "" {
					k = name + "." + k
				}
				lines = append(lines, fmt.Sprintf("%s: unknown key %q", where(k), k))
			}
			continue
		}
		msg := describe(cause)
		if strings.HasPrefix(cause.Error(), "time: ") {
			val := os.Getenv(envName(name))
			if n := nodeOf(raw, name); n != nil && n.Kind == yaml.ScalarNode {
				val = n.Value
			}
			msg = fmt.Sprintf("%q is not a duration (write 90s, 10m, 720h)", val)
		}
		lines = append(lines, fmt.Sprintf("%s: %s: %s", where(name), name, msg))
	}
	if len(lines) == 0 {
		if path != "" {
			return fmt.Errorf("config %s: %v", path, err)
		}
		return fmt.Errorf("config: %v", err)
	}
	sort.Strings(lines)
	return errors.New(strings.Join(lines, "\n"))
}

// envName is the environment variable of a key (PHONEBOOK_SESSION_TTL).
func envName(key string) string {
	return "PHONEBOOK_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// decodeLeaves collects the decoder's errors that name one key.
func decodeLeaves(err error, out *[]*mapstructure.DecodeError) {
	switch x := err.(type) {
	case nil:
		return
	case interface{ Unwrap() []error }:
		for _, e := range x.Unwrap() {
			decodeLeaves(e, out)
		}
		return
	case *mapstructure.DecodeError:
		inner := x.Unwrap()
		var de *mapstructure.DecodeError
		if _, multi := inner.(interface{ Unwrap() []error }); multi || errors.As(inner, &de) {
			decodeLeaves(inner, out)
			return
		}
		*out = append(*out, x)
		return
	}
	decodeLeaves(errors.Unwrap(err), out)
}

// describe says what is wrong with a value, in words a user reads.
func describe(err error) string {
	var pe *mapstructure.ParseError
	var ue *mapstructure.UnconvertibleTypeError
	switch {
	case errors.As(err, &pe):
		return fmt.Sprintf("%q is not %s", fmt.Sprint(pe.Value), typeWords(pe.Expected.Type()))
	case errors.As(err, &ue):
		return fmt.Sprintf("expected %s, found %s", typeWords(ue.Expected.Type()), typeWords(reflect.TypeOf(ue.Value)))
	}
	return err.Error()
}

func typeWords(t reflect.Type) string {
	if t == nil {
		return "nothing"
	}
	if t == reflect.TypeOf(time.Duration(0)) {
		return "a duration (90s, 10m, 720h)"
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping of keys"
	}
	return "a " + t.String()
}

func pathOr(p string) string {
	if p == "" {
		return "config"
	}
	return p
}

// findKey walks YAML to a dotted key ("smsc.links[0].nmae"): its value,
// nil when the key is not there, and the line of the key or, when it is
// not there, of its nearest parent.
func findKey(raw []byte, key string) (*yaml.Node, int) {
	var doc yaml.Node
	if len(raw) == 0 || yaml.Unmarshal(raw, &doc) != nil || len(doc.Content) == 0 {
		return nil, 0
	}
	node, line := doc.Content[0], 0
	for _, seg := range strings.Split(key, ".") {
		name, idx := seg, -1
		if b := strings.Index(seg, "["); b >= 0 && strings.HasSuffix(seg, "]") {
			name = seg[:b]
			fmt.Sscanf(seg[b+1:len(seg)-1], "%d", &idx)
		}
		found := false
		if node.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(node.Content); i += 2 {
				if strings.EqualFold(node.Content[i].Value, name) {
					line, node, found = node.Content[i].Line, node.Content[i+1], true
					break
				}
			}
		}
		if !found {
			return nil, line
		}
		if idx >= 0 {
			if node.Kind != yaml.SequenceNode || idx >= len(node.Content) {
				return nil, line
			}
			node = node.Content[idx]
			line = node.Line
		}
	}
	return node, line
}

func nodeOf(raw []byte, key string) *yaml.Node {
	n, _ := findKey(raw, key)
	return n
}

func lineOf(raw []byte, key string) int {
	_, line := findKey(raw, key)
	return line
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

// Validate checks values that decode fine but make no sense. The
// components' own checks (verify.secret_key's length...) are made by
// whoever builds their configurations: serve, and `config check`.
func (c *Config) Validate() error {
	if _, err := c.Log.SlogLevel(); err != nil {
		return err
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q is not text or json", c.Log.Format)
	}
	switch c.Database.Driver {
	case "sqlite", "mysql":
	default:
		return fmt.Errorf("database.driver: %q is not sqlite or mysql", c.Database.Driver)
	}
	if c.Database.Driver == "mysql" && c.Database.DSN == "" {
		return fmt.Errorf("database.dsn: required with driver mysql (e.g. user:pass@tcp(127.0.0.1:3306)/phonebook)")
	}
	if _, err := c.TrustedProxies(); err != nil {
		return err
	}
	if c.Cluster.DeadAfter < 2*time.Second || c.Cluster.PurgeAfter < c.Cluster.DeadAfter {
		return fmt.Errorf("cluster.dead_after (%s) must be at least 2s (nodes heartbeat every second), and cluster.purge_after (%s) at least as long",
			c.Cluster.DeadAfter, c.Cluster.PurgeAfter)
	}
	if err := c.Cluster.validate(); err != nil {
		return err
	}
	if c.Relay.MaxTextBytes <= 0 || c.Relay.MaxTextBytes+phonebook.DeliverOverhead > c.Relay.MaxFrameBytes {
		return fmt.Errorf("relay.max_text_bytes (%d) must be positive and at most relay.max_frame_bytes (%d) less %d, what a Deliver frame carries besides the text",
			c.Relay.MaxTextBytes, c.Relay.MaxFrameBytes, phonebook.DeliverOverhead)
	}
	if c.Relay.FallbackPerHour <= 0 || c.Relay.FallbackExpiry <= 0 || c.Relay.MaxOfflinePerRecipient <= 0 ||
		c.Relay.MaxOfflinePerSender <= 0 || c.Relay.OfflineTTL <= 0 {
		return fmt.Errorf("relay.fallback_per_hour, fallback_expiry, max_offline_per_recipient, max_offline_per_sender and offline_ttl must be positive")
	}
	if c.Relay.StoredRecheck < 0 {
		return fmt.Errorf("relay.stored_recheck: %s is negative", c.Relay.StoredRecheck)
	}
	if c.Relay.ReauthInterval < 0 {
		return fmt.Errorf("relay.reauth_interval: %s is negative", c.Relay.ReauthInterval)
	}
	if c.Registration.RecycleAfter < 0 {
		return fmt.Errorf("registration.recycle_after: %s is negative (0 turns recycling off)", c.Registration.RecycleAfter)
	}
	switch c.Relay.Fallback {
	case "never", "unregistered", "offline":
	default:
		return fmt.Errorf("relay.fallback: %q is not never, unregistered or offline", c.Relay.Fallback)
	}
	switch c.SMSReply.Mode {
	case "extension", "sticky":
	default:
		return fmt.Errorf("sms_reply.mode: %q is not extension or sticky", c.SMSReply.Mode)
	}
	switch c.SMSReply.StickyRule {
	case "most_recent", "ask":
	default:
		return fmt.Errorf("sms_reply.sticky_rule: %q is not most_recent or ask", c.SMSReply.StickyRule)
	}
	if c.SMSReply.ExtensionDigits < 1 || c.SMSReply.ExtensionDigits > 8 {
		return fmt.Errorf("sms_reply.extension_digits: %d is not 1 to 8", c.SMSReply.ExtensionDigits)
	}
	if c.SMSReply.MaxPerRecipientDay < 0 {
		return fmt.Errorf("sms_reply.max_per_recipient_day: %d is negative (0 = no cap)", c.SMSReply.MaxPerRecipientDay)
	}
	switch c.Contacts.Visibility {
	case "mutual", "contacts":
	default:
		return fmt.Errorf("contacts.visibility: %q is not mutual or contacts", c.Contacts.Visibility)
	}
	for i, l := range c.SMSC.Links {
		if l.Name == "" || l.Addr == "" {
			return fmt.Errorf("smsc.links[%d]: name and addr are required", i)
		}
		switch l.Bind {
		case "", "transceiver", "transmitter+receiver":
		default:
			return fmt.Errorf("smsc.links[%d].bind: %q is not transceiver or transmitter+receiver", i, l.Bind)
		}
	}
	if c.Limits.IPv4Prefix < 8 || c.Limits.IPv4Prefix > 32 {
		return fmt.Errorf("limits.ipv4_prefix: %d is not a prefix length from 8 to 32", c.Limits.IPv4Prefix)
	}
	if c.Limits.IPv6Prefix < 16 || c.Limits.IPv6Prefix > 128 {
		return fmt.Errorf("limits.ipv6_prefix: %d is not a prefix length from 16 to 128", c.Limits.IPv6Prefix)
	}
	if err := c.validateAdmin(); err != nil {
		return err
	}
	if c.SMSC.SimulatorAddr != "" && !isLoopbackAddr(c.SMSC.SimulatorAddr) {
		return fmt.Errorf("smsc.simulator_addr: %q is not a loopback address (the simulator prints every SMS, verification codes included)", c.SMSC.SimulatorAddr)
	}
	if c.SMSC.SimulatorHTTP != "" && !isLoopbackAddr(c.SMSC.SimulatorHTTP) {
		return fmt.Errorf("smsc.simulator_http: %q is not a loopback address (it lists every SMS the simulator received)", c.SMSC.SimulatorHTTP)
	}
	if c.MMS.SimulatorHTTP != "" && !isLoopbackAddr(c.MMS.SimulatorHTTP) {
		return fmt.Errorf("mms.simulator_http: %q is not a loopback address (it lists every MMS the simulator received)", c.MMS.SimulatorHTTP)
	}
	if err := c.MMSConfig().Validate(); err != nil {
		return err
	}
	return nil
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
			TLSInsecureSkipVerify: l.TLSInsecureSkipVerify, VASPUsername: l.VASPUsername, VASPPassword: l.VASPPassword})
	}
	return out
}

// AddrPrefixes is limits.ipv4_prefix and limits.ipv6_prefix.
func (c *Config) AddrPrefixes() phonebook.AddrPrefixes {
	return phonebook.AddrPrefixes{V4: c.Limits.IPv4Prefix, V6: c.Limits.IPv6Prefix}
}

// validateAdmin refuses an admin listener reachable from other hosts
// without a token.
func (c *Config) validateAdmin() error {
	a := c.Admin
	if a.Addr == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(a.Addr); err != nil {
		return fmt.Errorf("admin.addr: %q is not host:port: %v", a.Addr, err)
	}
	if !isLoopbackAddr(a.Addr) && a.Token == "" {
		return fmt.Errorf("admin.addr: %q is not a loopback address, so admin.token is required (clients send Authorization: Bearer <token>)", a.Addr)
	}
	if a.Token != "" && len(a.Token) < 16 {
		return fmt.Errorf("admin.token: at least 16 characters")
	}
	return nil
}

// isLoopbackAddr reports whether host:port names a loopback host
// ("localhost", 127.0.0.0/8, ::1). An empty host means every interface.
func isLoopbackAddr(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// validate checks the cluster keys the cluster package does not see as
// such (cluster.Config.Validate checks the rest when serve starts).
func (c *Cluster) validate() error {
	switch c.Storage {
	case "file", "memory":
	default:
		return fmt.Errorf("cluster.storage: %q is not file or memory", c.Storage)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("cluster.tls_cert and cluster.tls_key: set both or neither")
	}
	if c.CredsFile != "" && c.NKeyFile != "" {
		return fmt.Errorf("cluster.creds_file and cluster.nkey_file: set one, not both")
	}
	if c.ReadyGrace < 0 {
		return fmt.Errorf("cluster.ready_grace: %s is negative", c.ReadyGrace)
	}
	if c.ConnectTimeout < time.Second {
		return fmt.Errorf("cluster.connect_timeout: %s is less than 1s", c.ConnectTimeout)
	}
	return nil
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

// Redacted returns a copy with secrets replaced, for `config print`.
func (c Config) Redacted() Config {
	r := c
	if r.Database.DSN != "" {
		r.Database.DSN = redactDSN(r.Database.DSN)
	}
	if r.Verify.SecretKey != "" {
		r.Verify.SecretKey = "REDACTED"
	}
	if r.Admin.Token != "" {
		r.Admin.Token = "REDACTED"
	}
	r.SMSC.Links = append([]Link(nil), c.SMSC.Links...)
	for i := range r.SMSC.Links {
		if r.SMSC.Links[i].Password != "" {
			r.SMSC.Links[i].Password = "REDACTED"
		}
	}
	r.MMS.Links = append([]MMSLink(nil), c.MMS.Links...)
	for i := range r.MMS.Links {
		for _, p := range []*string{&r.MMS.Links[i].Password, &r.MMS.Links[i].VASPPassword} {
			if *p != "" {
				*p = "REDACTED"
			}
		}
	}
	return r
}

// redactDSN hides the password in user:pass@tcp(...)/db.
func redactDSN(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return dsn
	}
	cred := dsn[:at]
	if c := strings.Index(cred, ":"); c >= 0 {
		return cred[:c] + ":REDACTED" + dsn[at:]
	}
	return dsn
}

// YAML renders the configuration with its file keys.
func (c Config) YAML() ([]byte, error) {
	var m map[string]any
	if err := mapstructure.Decode(c, &m); err != nil {
		return nil, err
	}
	return yaml.Marshal(toPlain(m))
}

func toPlain(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = toPlain(e)
		}
		return x
	case time.Duration:
		return x.String()
	case []time.Duration:
		s := make([]string, len(x))
		for i, d := range x {
			s[i] = d.String()
		}
		return s
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Struct {
		var m map[string]any
		if mapstructure.Decode(v, &m) == nil {
			return toPlain(m)
		}
	}
	if rv.Kind() == reflect.Slice && rv.Type().Elem().Kind() == reflect.Struct {
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = toPlain(rv.Index(i).Interface())
		}
		return out
	}
	return v
}
