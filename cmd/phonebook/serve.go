package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/console"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/mm7/mmscsim"
	"github.com/phonebook/phonebook/mms"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
	"github.com/phonebook/phonebook/smsreply"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/verify"
)

func newServeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the server (SQLite under ./data by default; needs smsc.links, or smsc.simulator: true for the built-in simulator)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			m := NewMain(cfg, newLogger(cfg))
			if err := m.Run(cmd.Context()); err != nil {
				m.Close()
				return err
			}
			<-cmd.Context().Done()
			m.log.Info("shutting down")
			return m.Close()
		},
	}
	addServerFlags(c.Flags())
	c.Flags().String("relay-tcp-addr", "", "relay TCP listen address (relay.tcp_addr)")
	c.Flags().String("relay-udp-addr", "", "relay UDP listen address (relay.udp_addr)")
	c.Flags().String("nats-url", "", "NATS URL for cluster mode (cluster.nats_url)")
	c.Flags().String("admin-addr", "", "admin listener address: /admin/*, /metrics, pprof (admin.addr)")
	c.Flags().Bool("smsc-simulator", false, "with no smsc.links, run the built-in SMSC simulator (smsc.simulator)")
	return c
}

// Main is the running server: every component, wired explicitly. Tests
// start it with ports set to 127.0.0.1:0.
type Main struct {
	cfg config.Config
	log *slog.Logger
	reg *prometheus.Registry

	DB       *store.DB
	Accounts *accounts.Service
	API      *api.Server
	SMSC     *smsc.Router
	Outbox   *smsc.Outbox
	Sim      *smscsim.Sim // the built-in simulator (smsc.simulator with no links)
	MMS      *mms.Service
	MMSSim   *mmscsim.Sim // the built-in MMSC simulator (smsc.simulator with no mms.links)
	Verify   *verify.Service
	Replies  *smsreply.Service
	Relay    *relay.Server
	Contacts *contacts.Service
	Media    *media.Service
	Console  *console.Console // on the admin listener; nil without one

	relayLn     net.Listener
	relayUDP    net.PacketConn
	relayRouter relay.Router // nil = in-process; the cluster router otherwise

	// SimOutput receives what the built-in simulator prints (default stdout).
	SimOutput io.Writer

	httpSrv *http.Server
	httpLn  net.Listener

	adminMux *http.ServeMux // admin_http.go
	adminSrv *http.Server
	adminLn  net.Listener

	// adminOwnAuth are path prefixes whose handlers check admin.token
	// themselves; adminOnShutdown run when the admin server shuts down.
	adminOwnAuth    []string
	adminOnShutdown []func()

	closers []func(context.Context) error // run in reverse order at Close
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	once    sync.Once
}

// NewMain returns an unstarted server.
func NewMain(cfg config.Config, log *slog.Logger) *Main {
	return &Main{cfg: cfg, log: log}
}

// Run opens the store, migrates it, and starts every component. It returns
// once the server is listening; Close stops it.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.cfg
	if err := checkConfig(cfg); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	m.reg = prometheus.NewRegistry()
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	db, err := openStore(ctx, cfg)
	if err != nil {
		return err
	}
	m.DB = db
	m.closers = append(m.closers, func(context.Context) error { return db.Close() })
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	if len(applied) > 0 {
		m.log.Info("schema migrated", "applied", applied)
	}
	acfg, err := accountsConfig(cfg)
	if err != nil {
		return err
	}
	m.Accounts = accounts.New(db, acfg, m.log, m.reg)
	m.API = api.New(api.Config{
		MaxBodyBytes:          cfg.HTTP.MaxBodyBytes,
		NumberHeader:          cfg.Registration.Header.Name,
		MaxRegistrationsPerIP: cfg.Login.MaxRegistrationsPerIPDay,
		AddrPrefixes:          cfg.AddrPrefixes(),

		MaxLoginFailuresPerAddressHour: cfg.Login.MaxFailuresPerAddressHour,
		MaxRescueFailuresPerAddressDay: cfg.Login.MaxRescueFailuresPerAddressDay,
		MaxHeaderPerNumberDay:          cfg.Registration.Header.MaxPerNumberDay,
		MaxHeaderPerIdentityDay:        cfg.Registration.Header.MaxPerIdentityDay,
	}, m.Accounts, db, m.log, m.reg, nil) // /metrics is on the admin listener
	m.API.AddCheck("database", db.Ping)

	// The cluster first: it may wait for NATS, and a node that cannot
	// join must exit before anything else has started.
	if err := m.startCluster(ctx); err != nil {
		return err
	}
	m.startJanitor(ctx)
	if err := m.startSMSC(ctx); err != nil {
		return err
	}
	// Contacts before the relay: the relay serves contacts and presence
	// frames and marks users online and offline.
	if err := startContacts(ctx, m); err != nil {
		return err
	}
	if err := m.startMedia(ctx); err != nil {
		return err
	}
	if err := m.startMMS(ctx); err != nil {
		return err
	}
	if err := m.startRelay(ctx); err != nil {
		return err
	}
	if err := m.startConsole(ctx); err != nil {
		return err
	}
	if err := m.startAdmin(); err != nil {
		return err
	}

	m.httpLn, err = net.Listen("tcp", cfg.HTTP.Addr)
	if err != nil {
		return fmt.Errorf("http: listen %s: %w", cfg.HTTP.Addr, err)
	}
	m.httpSrv = &http.Server{
		Handler:           m.API,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      60 * time.Second, // long polls wait up to 30 s
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := m.httpSrv.Serve(m.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("http server stopped", "err", err)
		}
	}()
	relayAddr := ""
	if m.relayLn != nil {
		relayAddr = m.relayLn.Addr().String()
	}
	smscMode := "links"
	if m.Sim != nil {
		smscMode = "simulator"
	}
	m.log.Info("phonebook serving", "http", m.httpLn.Addr().String(), "relay", relayAddr, "admin", m.AdminAddr(),
		"database", cfg.Database.Driver, "smsc", smscMode, "node", cfg.Node)
	return nil
}

// accountsConfig is the accounts service's part of the configuration.
func accountsConfig(cfg config.Config) (accounts.Config, error) {
	proxies, err := cfg.TrustedProxies()
	if err != nil {
		return accounts.Config{}, err
	}
	return accounts.Config{
		DefaultRegion:        cfg.Phone.DefaultRegion,
		SessionTTL:           cfg.Session.TTL,
		LoginFailuresPerHour: cfg.Login.MaxFailuresPerHour,
		RescueFailuresPerDay: cfg.Login.MaxRescueFailuresPerDay,
		RescueHashSlots:      cfg.Login.RescueHashSlots,
		RescueHashQueue:      cfg.Login.RescueHashQueue,
		TrustClientNumber:    cfg.Registration.TrustClientNumber,
		TrustedProxies:       proxies,
		RecycleAfter:         cfg.Registration.RecycleAfter,
	}, nil
}

// HTTPAddr returns the address the API listens on.
func (m *Main) HTTPAddr() string { return m.httpLn.Addr().String() }

// Close stops accepting, drains, and closes the store, in that order.
func (m *Main) Close() error {
	var err error
	m.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if m.httpSrv != nil {
			err = m.httpSrv.Shutdown(ctx)
		}
		if m.adminSrv != nil {
			if e := m.adminSrv.Shutdown(ctx); e != nil && err == nil {
				err = e
			}
		}
		if m.cancel != nil {
			m.cancel()
		}
		for i := len(m.closers) - 1; i >= 0; i-- {
			if e := m.closers[i](ctx); e != nil && err == nil {
				err = e
			}
		}
		m.wg.Wait()
	})
	return err
}
