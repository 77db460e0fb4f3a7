package mms

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ServiceDeps are what the MMS side needs from the rest of the server.
type ServiceDeps struct {
	Store   Store
	Media   Media    // reads media, makes download links (media.Service)
	MOMedia MOMedia  // stores inbound media (media.Service); nil = no inbound MMS
	SMS     SMS      // the SMS fallback (smsreply.Service)
	Router  MORouter // routes inbound MMS (smsreply.Service)
	Region  string   // for numbers in national form
	Log     *slog.Logger
	Metrics prometheus.Registerer
}

// Service is the MMS side as serve runs it: the outbox over the MMSC
// links, and the VASP endpoint where the MMSCs post delivery reports and
// MMS from phones (http://<listener>/mm7/<link name>).
type Service struct {
	Outbox  *Outbox
	Inbound *Inbound

	ln   net.Listener
	srv  *http.Server
	done chan struct{}
	subs []*MM7Submitter
	log  *slog.Logger
}

// StartService builds the links of cfg, starts the outbox and serves the
// VASP endpoint on ln (nil = none: the MMSCs cannot send reports or MO).
func StartService(ctx context.Context, cfg Config, ln net.Listener, d ServiceDeps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{ln: ln, log: log}
	var links []Link
	for _, lc := range cfg.Links {
		l, err := NewMM7Link(lc)
		if err != nil {
			return nil, err
		}
		s.subs = append(s.subs, l.Submitter.(*MM7Submitter))
		links = append(links, l)
	}
	ob, err := NewOutbox(cfg, Deps{Store: d.Store, Links: links, Media: d.Media, SMS: d.SMS, Log: log, Metrics: d.Metrics})
	if err != nil {
		return nil, err
	}
	s.Outbox = ob
	if d.MOMedia != nil && d.Router != nil {
		if s.Inbound, err = NewInbound(d.Region, d.Router, d.MOMedia, log, d.Metrics); err != nil {
			return nil, err
		}
	}
	if ln != nil {
		mux := http.NewServeMux()
		for _, lc := range cfg.Links {
			var mo MOHandler
			if s.Inbound != nil {
				mo = s.Inbound.Handler(lc.Name)
			}
			mux.Handle("POST /mm7/"+lc.Name, ob.VASPHandler(lc, mo, log))
		}
		s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: time.Minute,
			IdleTimeout: 2 * time.Minute, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		s.done = make(chan struct{})
		go func() {
			defer close(s.done)
			if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("mms: VASP endpoint stopped", "err", err)
			}
		}()
	}
	if err := ob.Start(ctx); err != nil {
		s.Close(context.Background())
		return nil, err
	}
	log.Info("mms: outbox running", "links", len(links), "vasp", s.VASPAddr())
	return s, nil
}

// VASPAddr is the address of the VASP endpoint ("" without one).
func (s *Service) VASPAddr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Close stops taking reports and MO, then stops the outbox (waiting for
// submits in flight, see Outbox.Close).
func (s *Service) Close(ctx context.Context) error {
	if s.srv != nil {
		s.srv.Shutdown(ctx)
		<-s.done
	}
	var err error
	if s.Outbox != nil {
		err = s.Outbox.Close(ctx)
	}
	for _, sub := range s.subs {
		sub.Close()
	}
	return err
}
