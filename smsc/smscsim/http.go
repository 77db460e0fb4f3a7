package smscsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/phonebook/phonebook/internal/simctl"
)

// Handler is the HTTP control API:
//
//	POST /mo        {"from":"+8613800138000","to":"10690","text":"hi"}
//	POST /reply     {"from":"+8613800138000","text":"hi"}: to the source of the last SMS to from
//	POST /drop      drop every SMPP session
//	POST /throttle  {"every":N}
//	POST /resp-delay {"delay":"5ms"} or {"delay":"1ms-20ms"}; "0s" = answer at once
//	POST /faults    {"receipt_before_resp":true,"reset_after":N,"collide_seq":false}: only the keys given change
//	GET  /faults    the fault modes as they are
//	GET  /resp-delay the current delay
//	GET  /submits   every accepted submit_sm, as JSON
//	GET  /stats     counters
func (s *Sim) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mo", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ From, To, Text string }
		if !readJSON(w, r, &req) {
			return
		}
		if req.From == "" || req.To == "" || req.Text == "" {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"from", "to" and "text" are required`)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if err := s.InjectMO(ctx, req.From, req.To, req.Text); err != nil {
			simctl.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		simctl.WriteJSON(w, http.StatusOK, map[string]string{"status": "delivered"})
	})
	mux.HandleFunc("POST /reply", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ From, Text string }
		if !readJSON(w, r, &req) {
			return
		}
		if req.From == "" || req.Text == "" {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"from" and "text" are required`)
			return
		}
		if _, ok := s.LastSource(req.From); !ok {
			simctl.WriteError(w, http.StatusNotFound, "not_found", req.From+" received no SMS to reply to")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		to, err := s.Reply(ctx, req.From, req.Text)
		if err != nil {
			simctl.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		simctl.WriteJSON(w, http.StatusOK, map[string]string{"status": "delivered", "to": to})
	})
	mux.HandleFunc("POST /drop", func(w http.ResponseWriter, r *http.Request) {
		s.DropLinks()
		simctl.WriteJSON(w, http.StatusOK, map[string]string{"status": "dropped"})
	})
	mux.HandleFunc("POST /throttle", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Every *int `json:"every"`
		}
		if !readJSON(w, r, &req) {
			return
		}
		if req.Every == nil || *req.Every < 0 {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"every" must be a number, 0 or more (0 = off)`)
			return
		}
		s.SetThrottleEvery(*req.Every)
		simctl.WriteJSON(w, http.StatusOK, map[string]int{"every": *req.Every})
	})
	mux.HandleFunc("POST /resp-delay", simctl.SetRespDelay(&s.respDelay))
	mux.HandleFunc("GET /resp-delay", func(w http.ResponseWriter, r *http.Request) {
		simctl.WriteJSON(w, http.StatusOK, map[string]string{"delay": s.respDelay.Load().String()})
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var f Faults
		if !readJSON(w, r, &f) {
			return
		}
		if f.ResetAfter != nil && *f.ResetAfter < 0 {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"reset_after" must be 0 or more (0 = never)`)
			return
		}
		simctl.WriteJSON(w, http.StatusOK, s.SetFaults(f))
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		simctl.WriteJSON(w, http.StatusOK, s.SetFaults(Faults{}))
	})
	mux.HandleFunc("GET /submits", func(w http.ResponseWriter, r *http.Request) {
		subs := s.Submits()
		if subs == nil {
			subs = []Submit{} // "[]", not "null"
		}
		simctl.WriteJSON(w, http.StatusOK, subs)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		simctl.WriteJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		simctl.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no %s %s; see POST /mo, POST /reply, POST /drop, POST /throttle, POST /resp-delay, POST /faults, GET /faults, GET /submits, GET /stats", r.Method, r.URL.Path))
	})
	return mux
}

// StartHTTP serves Handler on addr until Close.
func (s *Sim) StartHTTP(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("smscsim http: %w", err)
	}
	s.httpSrv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("http", "err", err)
		}
	}()
	return ln.Addr().String(), nil
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	return simctl.ReadJSON(w, r, v, 64<<10)
}
