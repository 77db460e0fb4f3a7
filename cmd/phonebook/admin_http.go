package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phonebook/phonebook/api"
)

// The admin listener (admin.addr, loopback by default) serves what only
// operators may see: /admin/* (the relay's connection table, and what
// other components add with AdminHandle), /metrics, and /debug/pprof/ when
// admin.pprof is set. The public listener answers 404 for all of them, so
// a reverse proxy on the same host (whose requests all come from loopback)
// cannot expose them. With admin.token set every request needs
// Authorization: Bearer <token>; a non-loopback admin.addr requires one
// (config validation).

// AdminHandle registers an operator endpoint on the admin listener, e.g.
// "GET /admin/connections". Call it before Run returns (the components
// started by Run do).
func (m *Main) AdminHandle(pattern string, h http.Handler) {
	if m.adminMux == nil {
		m.adminMux = http.NewServeMux()
	}
	m.adminMux.Handle(pattern, h)
}

// AdminHandleOwnAuth registers a handler for every path under prefix
// (ending in "/") that checks admin.token itself: the console, which a
// browser reaches with a session cookie after signing in with the token,
// since a browser cannot send a bearer token when following a link.
func (m *Main) AdminHandleOwnAuth(prefix string, h http.Handler) {
	m.AdminHandle(prefix, h)
	m.adminOwnAuth = append(m.adminOwnAuth, prefix)
}

// startAdmin starts the admin listener, when admin.addr is set.
func (m *Main) startAdmin() error {
	cfg := m.cfg.Admin
	if cfg.Addr == "" {
		return nil
	}
	m.AdminHandle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	if cfg.Pprof {
		m.AdminHandle("/debug/pprof/", http.HandlerFunc(pprof.Index))
		m.AdminHandle("/debug/pprof/cmdline", http.HandlerFunc(pprof.Cmdline))
		m.AdminHandle("/debug/pprof/profile", http.HandlerFunc(pprof.Profile))
		m.AdminHandle("/debug/pprof/symbol", http.HandlerFunc(pprof.Symbol))
		m.AdminHandle("/debug/pprof/trace", http.HandlerFunc(pprof.Trace))
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("admin: listen %s: %w", cfg.Addr, err)
	}
	m.adminLn = ln
	srv := &http.Server{
		Handler:           api.RequireToken(cfg.Token, m.adminMux, m.adminOwnAuth...),
		ReadHeaderTimeout: 5 * time.Second,
		// pprof's profile and trace run for ?seconds= (30 by default).
		WriteTimeout: 5 * time.Minute,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(m.log.Handler(), slog.LevelWarn),
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.log.Error("admin server stopped", "err", err)
		}
	}()
	for _, f := range m.adminOnShutdown {
		srv.RegisterOnShutdown(f)
	}
	m.adminSrv = srv
	return nil
}

// AdminAddr returns the admin listener's address ("" when there is none).
func (m *Main) AdminAddr() string {
	if m.adminLn == nil {
		return ""
	}
	return m.adminLn.Addr().String()
}
