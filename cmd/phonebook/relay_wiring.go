package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/mms"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsreply"
)

// replyFallback sends relay messages through the durable SMS outbox, from
// the address that routes a reply back (smsreply), unless the recipient
// opted out or had enough today; the outbox's state changes come back to
// the relay as receipts.
type replyFallback struct {
	r   *smsreply.Service
	ob  *smsc.Outbox
	mms *mms.Outbox // media messages (mms_wiring.go); nil = text only
}

func (f replyFallback) SendSMS(ctx context.Context, s relay.FallbackSMS) error {
	return f.r.SendFallback(ctx, s.MessageID, s.From, s.To, s.Text)
}

// CheckSMS implements relay.FallbackChecker: a text over the outbox's
// parts limit is refused at Send when only an SMS could carry it.
func (f replyFallback) CheckSMS(s relay.FallbackSMS) error {
	return f.ob.Check(smsc.SMS{To: s.To, Text: s.Text, Kind: "fallback", Ref: s.MessageID})
}

// smsStates maps outbox states to the relay protocol's message states.
var smsStates = map[string]relaypb.MessageState{
	"submitted":     relaypb.MessageState_SMS_SUBMITTED,
	"delivered":     relaypb.MessageState_SMS_DELIVERED,
	"undeliverable": relaypb.MessageState_FAILED,
	"expired":       relaypb.MessageState_FAILED,
	"failed":        relaypb.MessageState_FAILED,
}

// smsFailureCode is the error code a sender reads for an outbox failure.
func smsFailureCode(state string) phonebook.Code {
	switch state {
	case "expired":
		return phonebook.EExpired
	case "undeliverable":
		return phonebook.EUndeliverable
	}
	return phonebook.EUnavailable
}

// accountsAuth authenticates relay logins with the accounts service and
// lets the relay check live sessions' tokens again (relay.TokenChecker).
type accountsAuth struct{ acc *accounts.Service }

func (a accountsAuth) Authenticate(ctx context.Context, token string) (phonebook.MSISDN, string, error) {
	p, err := a.acc.Authenticate(ctx, token)
	return p.Number, p.DeviceID, err
}

func (a accountsAuth) InvalidTokenHashes(ctx context.Context, hashes [][]byte) ([][]byte, error) {
	return a.acc.InvalidTokenHashes(ctx, hashes)
}

func (a accountsAuth) AuthenticateUDP(ctx context.Context, udpID []byte) (phonebook.MSISDN, string, []byte, error) {
	p, err := a.acc.AuthenticateUDP(ctx, udpID)
	return p.Number, p.DeviceID, p.Token, err
}

// relayConfig is the relay's part of the configuration.
func relayConfig(cfg config.Config) relay.Config {
	return relay.Config{
		NodeID:                   nodeID(cfg.Node),
		DefaultRegion:            cfg.Phone.DefaultRegion,
		MaxFrameSize:             cfg.Relay.MaxFrameBytes,
		HeartbeatInterval:        cfg.Relay.Heartbeat,
		IdleTimeout:              cfg.Relay.IdleTimeout,
		SendQueue:                cfg.Relay.SendQueue,
		MaxTextBytes:             cfg.Relay.MaxTextBytes,
		SendRate:                 cfg.Relay.MaxMsgsPerSecond,
		Fallback:                 relay.FallbackPolicy(cfg.Relay.Fallback),
		FallbackGrace:            cfg.Relay.FallbackAfter,
		SMSTemplate:              cfg.Relay.FallbackTemplate,
		FallbackPerHour:          cfg.Relay.FallbackPerHour,
		FallbackExpiry:           cfg.Relay.FallbackExpiry,
		MaxOfflinePerRecipient:   cfg.Relay.MaxOfflinePerRecipient,
		MaxOfflinePerSender:      cfg.Relay.MaxOfflinePerSender,
		OfflineTTL:               cfg.Relay.OfflineTTL,
		ReauthInterval:           cfg.Relay.ReauthInterval,
		StoredRecheck:            cfg.Relay.StoredRecheck,
		MaxPendingAuth:           cfg.Relay.MaxPendingAuth,
		MaxPendingAuthPerIP:      cfg.Relay.MaxPendingAuthPerIP,
		MaxAuthFailuresPerMinute: cfg.Relay.MaxAuthFailuresPerMinute,
		AddrPrefixes:             cfg.AddrPrefixes(),
	}
}

// relayTLS loads relay.tls_cert and relay.tls_key; nil when neither is set.
func relayTLS(cfg config.Config) (*tls.Config, error) {
	if cfg.Relay.TLSCert == "" && cfg.Relay.TLSKey == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.Relay.TLSCert, cfg.Relay.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("relay: tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// startRelay starts the IM relay on its TCP listener, authenticating with
// the accounts service and falling back to SMS through the outbox.
func (m *Main) startRelay(ctx context.Context) error {
	cfg := m.cfg
	if cfg.Relay.TCPAddr == "" {
		return nil
	}
	var fb relay.Fallback
	if cfg.Relay.Fallback != "never" {
		fb = replyFallback{m.Replies, m.Outbox, m.mmsOutbox()}
	}
	srv, err := relay.NewServer(relayConfig(cfg), relay.Deps{
		Auth:      accountsAuth{m.Accounts},
		Store:     m.DB,
		Directory: m.Accounts,
		Fallback:  fb,
		Router:    m.relayRouter,
		Contacts:  m.Contacts,
		Media:     m.Media,
		Logger:    m.log,
		Metrics:   m.reg,
	})
	if err != nil {
		return err
	}
	m.Relay = srv
	m.Replies.SetRelay(srv)
	m.connectMMS(srv)
	// Sessions revoked by this process's API close their connections at
	// once; the relay's periodic check finds the rest.
	m.Accounts.OnSessionsRevoked(func(ctx context.Context, n phonebook.MSISDN) { srv.Recheck(ctx, n) })
	m.Contacts.SetNotifier(srv.Notifier())
	if cr, ok := m.relayRouter.(*cluster.Router); ok && m.Contacts != nil {
		// Users who were online on a node that crashed: nobody else marks
		// them offline.
		cr.OnGone(func(ctx context.Context, n phonebook.MSISDN) {
			if err := m.Contacts.Offline(ctx, n); err != nil {
				m.log.Warn("cluster: presence of a dead node's user not recorded", "number", n, "err", err)
				return
			}
			if cr.Locate(n) != nil {
				m.Contacts.Online(ctx, n) // reconnected meanwhile
			}
		})
		// After a NATS outage: presence lists again, and users whose
		// sessions the others purged are recorded online again.
		cr.OnResync(srv.Resynced)
	}
	if m.relayRouter == nil {
		// Alone, this node held every connection, and has none now: users
		// left online by a crash are offline.
		if n, err := m.DB.ResetOnline(ctx); err != nil {
			return fmt.Errorf("relay: reset presence: %w", err)
		} else if n > 0 {
			m.log.Info("users left online by the last run marked offline", "count", n)
		}
	}
	m.Outbox.OnStateChange(func(ctx context.Context, ev smsc.OutboxEvent) {
		if ev.Kind != "fallback" || ev.Ref == "" {
			return
		}
		if st, ok := smsStates[ev.State]; ok {
			var reason error
			if st == relaypb.MessageState_FAILED {
				reason = phonebook.Errorf(smsFailureCode(ev.State), "%s: %s", ev.State, ev.Error)
			}
			if err := srv.SMSStateChanged(ctx, ev.Ref, st, reason); err != nil {
				m.log.Warn("relay: sms state not recorded", "message", ev.Ref, "state", ev.State, "err", err)
			}
		}
	})

	ln, err := net.Listen("tcp", cfg.Relay.TCPAddr)
	if err != nil {
		return fmt.Errorf("relay: listen %s: %w", cfg.Relay.TCPAddr, err)
	}
	if tc, err := relayTLS(cfg); err != nil {
		ln.Close()
		return err
	} else if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	m.relayLn = ln
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, relay.ErrServerClosed) {
			m.log.Error("relay stopped", "err", err)
		}
	}()
	// Closers run in reverse order: the relay shuts down (storing whatever
	// was not acknowledged) before the outbox and the store close.
	m.closers = append(m.closers, func(ctx context.Context) error { return srv.Shutdown(ctx) })

	if cfg.Relay.UDPAddr != "" {
		pc, err := net.ListenPacket("udp", cfg.Relay.UDPAddr)
		if err != nil {
			return fmt.Errorf("relay: listen udp %s: %w", cfg.Relay.UDPAddr, err)
		}
		m.relayUDP = pc
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			// Shutdown stops the UDP transport and closes the socket.
			if err := srv.ServeUDP(pc, relay.UDPConfig{}); err != nil && !errors.Is(err, relay.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				m.log.Error("relay UDP stopped", "err", err)
			}
		}()
		m.log.Info("relay listening", "udp", pc.LocalAddr().String())
	}

	// The connection table for `phonebook admin connections`.
	m.AdminHandle("GET /admin/connections", srv.ConnectionsHandler())
	m.log.Info("relay listening", "tcp", ln.Addr().String())
	return nil
}

// RelayUDPAddr returns the relay's UDP address.
func (m *Main) RelayUDPAddr() string { return m.relayUDP.LocalAddr().String() }

// RelayAddr returns the relay's TCP address.
func (m *Main) RelayAddr() string { return m.relayLn.Addr().String() }
