// Package config loads Phonebook's configuration: built-in defaults, then a
// YAML file, then PHONEBOOK_* environment variables, then command-line flags.
// It is the only package that imports viper; the rest of the server receives
// plain values. Unknown keys are errors that name the key, file and line.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
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
}

// SMSC configures the links to operator SMSCs. With no links, serve starts
// the built-in simulator on loopback and binds to it.
type SMSC struct {
	Links     []Link    `mapstructure:"links"`
	Simulator Simulator `mapstructure:"simulator"`
	Outbox    Outbox    `mapstructure:"outbox"`
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
	MaxTPS                float64       `mapstructure:"max_tps"`
	EnquireLink           time.Duration `mapstructure:"enquire_link"`
	RespTimeout           time.Duration `mapstructure:"resp_timeout"`
	ReconnectMin          time.Duration `mapstructure:"reconnect_min"`
	ReconnectMax          time.Duration `mapstructure:"reconnect_max"`
	Prefixes              []string      `mapstructure:"prefixes"`
	ReceiptIDs            string        `mapstructure:"receipt_ids"`
}

type Simulator struct {
	Addr         string        `mapstructure:"addr"`
	ReceiptDelay time.Duration `mapstructure:"receipt_delay"`
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
	TLSCert          string        `mapstructure:"tls_cert"`
	TLSKey           string        `mapstructure:"tls_key"`
	ReauthInterval   time.Duration `mapstructure:"reauth_interval"`
	// TCP connections not yet authenticated, in all and per client address.
	MaxPendingAuth      int `mapstructure:"max_pending_auth"`
	MaxPendingAuthPerIP int `mapstructure:"max_pending_auth_per_ip"`
	// Failed TCP logins per client address per minute.
	MaxAuthFailuresPerMinute int `mapstructure:"max_auth_failures_per_minute"`
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
}

// Default returns the embedded default: SQLite under ./data, the built-in
// SMSC simulator, everything on loopback.
func Default() Config {
	host, _ := os.Hostname()
	return Config{
		Node:     host,
		Log:      Log{Level: "info", Format: "text"},
		HTTP:     HTTP{Addr: "127.0.0.1:8080", MaxBodyBytes: 64 << 10},
		Database: Database{Driver: "sqlite", DSN: "data/phonebook.db", MaxOpenConns: 64},
		Phone:    Phone{DefaultRegion: "CN"},
		Session:  Session{TTL: 30 * 24 * time.Hour},
		Login:    Login{MaxFailuresPerHour: 20, MaxRescueFailuresPerDay: 10, MaxRegistrationsPerIPDay: 1000},
		Registration: Registration{
			Header:       Header{Name: "X-Up-Calling-Line-Id"},
			RecycleAfter: 90 * 24 * time.Hour,
		},
		Verify: Verify{
			CodeTTL:            10 * time.Minute,
			MaxChecks:          5,
			ResendWaits:        []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 10 * time.Minute},
			Template:           "Your Phonebook code is {code}. It expires in 10 minutes.",
			MaxPerNumberDay:    10,
			MaxPerIPHour:       100,
			MaxPerPrefixHour:   1000,
			ShortNumber:        "10690",
			TokenTTL:           10 * time.Minute,
			TokenPrefix:        "PB",
			MaxTokensPerIPHour: 100,
		},
		SMSC: SMSC{
			Simulator: Simulator{Addr: "127.0.0.1:0", ReceiptDelay: 500 * time.Millisecond},
			Outbox:    Outbox{Validity: 24 * time.Hour, MaxAttempts: 50, ShutdownTimeout: 30 * time.Second},
		},
		Relay: Relay{
			TCPAddr: "127.0.0.1:5222", UDPAddr: "127.0.0.1:5222",
			MaxFrameBytes: 64 << 10, MaxTextBytes: 16 << 10,
			Heartbeat: 20 * time.Second, IdleTimeout: 45 * time.Second,
			SendQueue: 256, MaxMsgsPerSecond: 100,
			Fallback: "unregistered", FallbackAfter: 5 * time.Minute,
			FallbackTemplate: "[Phonebook] {from}: {text}",
			ReauthInterval:   time.Minute,
			MaxPendingAuth:   4096, MaxPendingAuthPerIP: 256,
		},
		Cluster:  Cluster{DeadAfter: 5 * time.Second, PurgeAfter: time.Minute},
		Contacts: Contacts{Visibility: "mutual", LookupCapacity: 50000, LookupRefillPerS: 50000.0 / 86400},
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
	if err := c.Validate(); err != nil {
		if path != "" {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return c, nil
}

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
}

var knownKeys = map[string]bool{}

func isKnownKey(k string) bool { return knownKeys[k] }

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
		knownKeys[key] = true
		v.SetDefault(key, fv.Interface())
	}
}

// explain turns mapstructure's "invalid keys" error into one that names each
// key with its file and line.
func explain(path string, raw []byte, err error) error {
	msg := err.Error()
	where := "config"
	if path != "" {
		where = "config " + path
	}
	var lines []string
	for _, part := range strings.Split(msg, "\n") {
		i := strings.Index(part, "has invalid keys: ")
		if i < 0 {
			continue
		}
		for _, k := range strings.Split(part[i+len("has invalid keys: "):], ", ") {
			k = strings.TrimSpace(k)
			full := k
			if j := strings.Index(part, "'"); j >= 0 {
				if e := strings.Index(part[j+1:], "'"); e > 0 && part[j+1:j+1+e] != "" {
					full = part[j+1:j+1+e] + "." + k
				}
			}
			line := lineOf(raw, full)
			if line > 0 {
				lines = append(lines, fmt.Sprintf("%s:%d: unknown key %q", pathOr(path), line, full))
			} else {
				lines = append(lines, fmt.Sprintf("%s: unknown key %q", where, full))
			}
		}
	}
	if len(lines) == 0 {
		return fmt.Errorf("%s: %v", where, strings.ReplaceAll(msg, "\n", "; "))
	}
	sort.Strings(lines)
	return errors.New(strings.Join(lines, "\n"))
}

func pathOr(p string) string {
	if p == "" {
		return "config"
	}
	return p
}

// lineOf finds the line of a dotted key ("smsc.links[0].nmae") in YAML.
func lineOf(raw []byte, key string) int {
	if len(raw) == 0 {
		return 0
	}
	var doc yaml.Node
	if yaml.Unmarshal(raw, &doc) != nil || len(doc.Content) == 0 {
		return 0
	}
	node := doc.Content[0]
	line := 0
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
					line = node.Content[i].Line
					node = node.Content[i+1]
					found = true
					break
				}
			}
		}
		if !found {
			return line
		}
		if idx >= 0 && node.Kind == yaml.SequenceNode && idx < len(node.Content) {
			node = node.Content[idx]
			line = node.Line
		}
	}
	return line
}

// Validate checks values that decode fine but make no sense.
func (c *Config) Validate() error {
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
	if !strings.Contains(c.Verify.Template, "{code}") {
		return fmt.Errorf("verify.template: must contain {code}")
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
	r.SMSC.Links = append([]Link(nil), c.SMSC.Links...)
	for i := range r.SMSC.Links {
		if r.SMSC.Links[i].Password != "" {
			r.SMSC.Links[i].Password = "REDACTED"
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
