package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/smscsim"
	"github.com/phonebook/phonebook/smsreply"
	"github.com/phonebook/phonebook/verify"
)

// linkConfigs turns the file's links into smsc link configurations.
func linkConfigs(ls []config.Link) []smsc.LinkConfig {
	out := make([]smsc.LinkConfig, 0, len(ls))
	for _, l := range ls {
		lc := smsc.LinkConfig{
			Name: l.Name, Addr: l.Addr, SystemID: l.SystemID, Password: l.Password, SystemType: l.SystemType,
			Bind: l.Bind, SourceAddr: l.SourceAddr,
			TLS: l.TLS, TLSServerName: l.TLSServerName, TLSInsecureSkipVerify: l.TLSInsecureSkipVerify,
			Window: l.Window, Binds: l.Binds, MaxTPS: l.MaxTPS, EnquireLink: l.EnquireLink, RespTimeout: l.RespTimeout,
			ReconnectMin: l.ReconnectMin, ReconnectMax: l.ReconnectMax, Prefixes: l.Prefixes,
			ReceiptIDs: l.ReceiptIDs,
		}
		if l.SourceTON != nil || l.SourceNPI != nil {
			lc.SourceTONNPISet = true
			if l.SourceTON != nil {
				lc.SourceTON = *l.SourceTON
			}
			if l.SourceNPI != nil {
				lc.SourceNPI = *l.SourceNPI
			}
		}
		out = append(out, lc)
	}
	return out
}

// verifyConfig is number verification's part of the configuration.
func verifyConfig(cfg config.Config) verify.Config {
	return verify.Config{
		CodeTTL: cfg.Verify.CodeTTL, MaxChecks: cfg.Verify.MaxChecks, ResendWaits: cfg.Verify.ResendWaits,
		Template: cfg.Verify.Template, MaxPerNumberDay: cfg.Verify.MaxPerNumberDay, MaxPerIPHour: cfg.Verify.MaxPerIPHour,
		MaxPerPrefixHour: cfg.Verify.MaxPerPrefixHour, AllowCountries: cfg.Verify.AllowCountries,
		DenyCountries: cfg.Verify.DenyCountries, ShortNumber: cfg.Verify.ShortNumber, TokenTTL: cfg.Verify.TokenTTL,
		TokenPrefix: cfg.Verify.TokenPrefix, MaxTokensPerIPHour: cfg.Verify.MaxTokensPerIPHour,
		MaxPollers: cfg.Verify.MaxPollers,
		SecretKey:  cfg.Verify.SecretKey,
	}
}

// errNoSMSC is serve's refusal to start with nowhere to send SMS.
var errNoSMSC = errors.New("smsc: no smsc.links configured and smsc.simulator is not true: " +
	"set smsc.links to your operator's SMSC, or smsc.simulator: true (PHONEBOOK_SMSC_SIMULATOR=true, --smsc-simulator) " +
	"to run the built-in simulator, which prints every SMS, verification codes included (testing only)")

// startSMSC starts the SMS side: the links (or, with none configured and
// smsc.simulator set, the built-in simulator on loopback and one link to it
// over TCP), the durable outbox, and number verification by SMS.
func (m *Main) startSMSC(ctx context.Context) error {
	cfg := m.cfg
	links := linkConfigs(cfg.SMSC.Links)
	if len(links) == 0 {
		if !cfg.SMSC.Simulator {
			return errNoSMSC // Run checked already
		}
		out := m.SimOutput
		if out == nil {
			out = os.Stdout
		}
		sim := smscsim.New(smscsim.Config{ReceiptDelay: cfg.SMSC.SimulatorReceiptDelay, Output: out})
		if err := sim.Start(cfg.SMSC.SimulatorAddr); err != nil {
			return fmt.Errorf("smsc simulator: %w", err)
		}
		m.Sim = sim
		m.closers = append(m.closers, func(context.Context) error { sim.Close(); return nil })
		if cfg.SMSC.SimulatorHTTP != "" {
			a, err := sim.StartHTTP(cfg.SMSC.SimulatorHTTP)
			if err != nil {
				return fmt.Errorf("smsc simulator: %w", err)
			}
			m.log.Info("smsc simulator: HTTP control (phonebook smsc-sim mo --http ...)", "addr", a)
		}
		links = []smsc.LinkConfig{{Name: "simulator", Addr: sim.Addr(), SystemID: "phonebook", SourceAddr: cfg.Verify.ShortNumber, Window: 100}}
		m.log.Warn("smsc.simulator: the built-in SMSC simulator is running instead of an operator's SMSC; every SMS, verification codes included, is printed",
			"addr", sim.Addr())
	} else if cfg.SMSC.Simulator {
		m.log.Info("smsc.simulator is ignored: smsc.links are configured")
	}
	mode := "links"
	if m.Sim != nil {
		mode = "simulator" // /readyz says so: nothing reaches real phones
	}
	m.API.AddInfo("smsc", func() any { return mode })
	// The router hands every deliver_sm to the outbox, which exists only
	// once the router does: the closure breaks the cycle.
	var outbox *smsc.Outbox
	router, err := smsc.NewRouter(links, func(ctx context.Context, d smsc.Deliver) error {
		return outbox.HandleDeliver(ctx, d)
	}, m.log, m.reg)
	if err != nil {
		return err
	}
	outbox, err = smsc.NewOutbox(m.DB, router, smsc.OutboxConfig{
		NodeID:          nodeID(cfg.Node),
		Workers:         max(router.Capacity(), 100),
		DefaultValidity: cfg.SMSC.Outbox.Validity,
		MaxAttempts:     cfg.SMSC.Outbox.MaxAttempts,
		DrainTimeout:    cfg.SMSC.Outbox.ShutdownTimeout,
		Region:          cfg.Phone.DefaultRegion,
	}, m.log, m.reg)
	if err != nil {
		return err
	}
	m.SMSC, m.Outbox = router, outbox
	// The links outlive the root context: Close cancels it first, and the
	// outbox must still get the responses of its submits in flight. Their
	// closer unbinds them once the outbox has drained.
	router.Start(context.WithoutCancel(ctx))
	m.closers = append(m.closers, func(context.Context) error { return router.Close() })

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := outbox.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			m.log.Error("sms outbox stopped", "err", err)
		}
	}()
	// Closers run in reverse: the outbox stops claiming when ctx ends, waits
	// (up to smsc.outbox.shutdown_timeout) for the responses of submits in
	// flight and records them; only then does the router unbind.
	m.closers = append(m.closers, func(context.Context) error { stop(); <-done; return nil })

	m.API.AddInfo("smsc_links", func() any { return router.States() })
	m.API.AddCheck("smsc", router.Ready)

	v, err := verify.New(ctx, m.DB, m.Accounts, outbox.SenderFor("verify", cfg.Verify.CodeTTL), verifyConfig(cfg), cfg.Phone.DefaultRegion, m.log, m.reg)
	if err != nil {
		return err
	}
	m.Verify = v
	m.API.SetVerify(v)
	shortNumber := cfg.SMSReply.ShortNumber
	if shortNumber == "" {
		shortNumber = cfg.Verify.ShortNumber
	}
	perDay := cfg.SMSReply.MaxPerRecipientDay
	if perDay == 0 {
		perDay = -1 // the file's 0 is "no cap"; smsreply's is "the default"
	}
	replies, err := smsreply.New(smsreply.Config{
		Mode: cfg.SMSReply.Mode, ShortNumber: shortNumber,
		ExtensionDigits: cfg.SMSReply.ExtensionDigits, ExtensionIdle: cfg.SMSReply.ExtensionIdle,
		StickyWindow: cfg.SMSReply.StickyWindow, StickyRule: cfg.SMSReply.StickyRule,
		OptOutKeywords: cfg.SMSReply.OptOutKeywords, OptInKeywords: cfg.SMSReply.OptInKeywords,
		OptOutText: cfg.SMSReply.OptOutText, OptInText: cfg.SMSReply.OptInText, AskText: cfg.SMSReply.AskText,
		MaxPerRecipientDay: perDay, Region: cfg.Phone.DefaultRegion,
	}, m.DB, outbox, m.log, m.reg)
	if err != nil {
		return err
	}
	m.Replies = replies
	// Every inbound SMS that no more specific handler claims, in the
	// documented order: method C tokens (which may stand anywhere in the
	// text), opt-out keywords, conversation replies, unknown.
	outbox.HandleMO("", replies.MOHandler(v.HandleMO))
	return nil
}
