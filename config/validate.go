package config

// This file holds Config.Validate and the checks it runs on the admin
// endpoint and the cluster settings.

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay/rudp"
)

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
	if err := validUDP(c.Relay.UDP); err != nil {
		return err
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
	if err := c.MediaConfig().Validate(); err != nil {
		return err
	}
	if c.Media.Retention > 0 && c.Media.Retention < c.Relay.OfflineTTL {
		return fmt.Errorf("media.retention (%s) must be at least relay.offline_ttl (%s): a stored message must not outlive its media",
			c.Media.Retention, c.Relay.OfflineTTL)
	}
	return nil
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

// validUDP refuses relay.udp values the transport would silently change:
// zero or negative counts, and datagrams no path or no header fits.
func validUDP(u RelayUDP) error {
	for _, v := range []struct {
		key string
		n   int
	}{{"max_sessions", u.MaxSessions}, {"recv_window", u.RecvWindow}, {"unauth_burst", u.UnauthBurst},
		{"auth_slots", u.AuthSlots}, {"limiter_table", u.LimiterTable}} {
		if v.n <= 0 {
			return fmt.Errorf("relay.udp.%s: %d must be at least 1", v.key, v.n)
		}
	}
	if !(u.UnauthRate > 0) {
		return fmt.Errorf("relay.udp.unauth_rate: %v must be above 0 datagrams a second", u.UnauthRate)
	}
	if lo := rudp.Overhead + 64; u.MaxDatagram < lo || u.MaxDatagram > 65507 {
		return fmt.Errorf("relay.udp.max_datagram: %d is not between %d and 65507 bytes", u.MaxDatagram, lo)
	}
	return nil
}
