package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/relay"
)

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

// startRelay starts the IM relay on its TCP listener, authenticating with
// the accounts service and falling back to SMS through the outbox.
func (m *Main) startRelay(ctx context.Context) error {
	cfg := m.cfg
	if cfg.Relay.TCPAddr == "" {
		return nil
	}
	var fb relay.Fallback
	if cfg.Relay.Fallback != "never" {
		// The reply-routing service sends through the outbox and says
		// whether the outbox could take an SMS at all.
		// Media messages go to the MMS side (mms_wiring.go).
		fb = relay.FallbackFuncs{Send: m.Replies.SendFallback, Check: m.Replies.CheckFallback, Media: m.mediaFallback()}
	}
	srv, err := relay.NewServer(relayConfig(cfg), relay.Deps{
		Auth:      relay.AccountsAuth{Accounts: m.Accounts},
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
	if cr, ok := m.relayRouter.(*cluster.Router); ok {
		cr.OnGone(srv.Gone)
		cr.OnResync(srv.Resynced)
	}
	if err := srv.RecoverPresence(ctx); err != nil {
		return err
	}
	m.Outbox.OnStateChange(m.Replies.FallbackStates(srv.SMSOutboxStateChanged))

	ln, err := net.Listen("tcp", cfg.Relay.TCPAddr)
	if err != nil {
		return fmt.Errorf("relay: listen %s: %w", cfg.Relay.TCPAddr, err)
	}
	if tc, err := relay.LoadTLS(cfg.Relay.TLSCert, cfg.Relay.TLSKey); err != nil {
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
			if err := srv.ServeUDP(pc, cfg.UDPConfig()); err != nil && !errors.Is(err, relay.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
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
