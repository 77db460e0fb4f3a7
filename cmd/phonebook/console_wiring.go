package main

import (
	"context"

	"github.com/phonebook/phonebook/console"
)

// startConsole mounts the operators' web console on the admin listener
// (under /console/; it needs admin.token, see docs/operations.md) and
// starts its metric sampler.
func (m *Main) startConsole(ctx context.Context) error {
	if m.cfg.Admin.Addr == "" {
		return nil
	}
	svc := console.Services{Store: m.DB, Accounts: m.Accounts, Outbox: m.Outbox, Metrics: m.reg}
	if m.SMSC != nil {
		svc.Links = m.SMSC.States
	}
	if m.Relay != nil {
		svc.Connections = m.Relay.Connections
	}
	con, err := console.New(console.Config{Token: m.cfg.Admin.Token, Node: m.cfg.Node, Region: m.cfg.Phone.DefaultRegion}, svc, m.log)
	if err != nil {
		return err
	}
	m.Console = con
	m.AdminHandleOwnAuth(console.Prefix, con)
	// Live-update streams end when the admin server shuts down, so that
	// its Shutdown does not wait for them.
	m.adminOnShutdown = append(m.adminOnShutdown, con.Close)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		con.Start(ctx)
	}()
	return nil
}
