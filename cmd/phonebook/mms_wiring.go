package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/phonebook/phonebook/mm7/mmscsim"
	"github.com/phonebook/phonebook/mms"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
)

// startMMS starts the MMS side (mms.StartService): the outbox over the
// links of mms.links or, with none and smsc.simulator set, over the
// built-in MMSC simulator on loopback; the VASP endpoint on mms.vasp_addr.
// Without links and simulator, media messages fall back to SMS with a
// download link. It runs after startSMSC and startMedia, before
// startRelay (connectMMS links the two once the relay runs).
func (m *Main) startMMS(ctx context.Context) error {
	cfg := m.cfg
	mc := cfg.MMSConfig()
	mc.NodeID = nodeID(cfg.Node)
	useSim := len(mc.Links) == 0 && cfg.SMSC.Simulator
	addr := cfg.MMS.VASPAddr
	if addr == "" && useSim {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	if addr != "" {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("mms: listen %s: %w", addr, err)
		}
	}
	if useSim {
		out := m.SimOutput
		if out == nil {
			out = os.Stdout
		}
		sim := mmscsim.New(mmscsim.Config{VASPURL: "http://" + ln.Addr().String() + "/mm7/simulator",
			ReportDelay: cfg.SMSC.SimulatorReceiptDelay, Output: out, Log: m.log})
		if err := sim.Start("127.0.0.1:0"); err != nil {
			ln.Close()
			return fmt.Errorf("mmsc simulator: %w", err)
		}
		m.MMSSim = sim
		m.closers = append(m.closers, func(context.Context) error { sim.Close(); return nil })
		if cfg.MMS.SimulatorHTTP != "" {
			a, err := sim.StartHTTP(cfg.MMS.SimulatorHTTP)
			if err != nil {
				ln.Close()
				return fmt.Errorf("mmsc simulator http: %w", err)
			}
			m.log.Info("mmsc simulator HTTP control", "addr", a)
		}
		mc.Links = []mms.LinkConfig{{Name: "simulator", URL: sim.URL(), SenderAddress: cfg.Verify.ShortNumber}}
	}
	var media mms.MediaStore
	if m.Media != nil {
		media = mms.MediaStore{S: m.Media}
	}
	svc, err := mms.StartService(ctx, mc, ln, mms.ServiceDeps{Store: m.DB, Media: media, MOMedia: media, SMS: m.Replies,
		Router: m.Replies, Region: cfg.Phone.DefaultRegion, Log: m.log, Metrics: m.reg})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return err
	}
	m.MMS = svc
	m.closers = append(m.closers, svc.Close)
	caps := svc.Outbox.Capabilities()
	m.API.SetMMSCapabilityReporter(caps.ClientReport)
	m.AdminHandle("/admin/mms-capable/", caps.AdminHandler(cfg.Phone.DefaultRegion))
	return nil
}

// connectMMS hands inbound MMS to the relay and the MMS states to the
// senders.
func (m *Main) connectMMS(srv *relay.Server) {
	if m.MMS == nil {
		return
	}
	if m.MMS.Inbound != nil {
		m.MMS.Inbound.SetRelay(srv)
	}
	m.MMS.Outbox.OnStateChange(func(ctx context.Context, ev mms.Event) {
		if st, reason, ok := mms.RelayState(ev); ok {
			if err := srv.SMSStateChanged(ctx, ev.Ref, st, reason); err != nil {
				m.log.Warn("relay: mms state not recorded", "message", ev.Ref, "state", ev.State, "err", err)
			}
		}
	})
}

// mediaFallback is the relay's fallback for messages with media: the MMS
// side picks an MMS or an SMS with a download link (nil without one).
func (m *Main) mediaFallback() func(context.Context, relay.FallbackSMS) (relaypb.MessageState, error) {
	if m.MMS == nil {
		return nil
	}
	ob := m.MMS.Outbox
	return func(ctx context.Context, s relay.FallbackSMS) (relaypb.MessageState, error) {
		ids := make([]string, len(s.Media))
		for i, r := range s.Media {
			ids[i] = r.Id
		}
		via, err := ob.Send(ctx, mms.Message{Ref: s.MessageID, From: s.From, To: s.To, Text: s.Text, Media: ids})
		if err != nil {
			return 0, err
		}
		if via == mms.ViaMMS {
			return relaypb.MessageState_MMS_QUEUED, nil
		}
		return relaypb.MessageState_SMS_QUEUED, nil
	}
}
