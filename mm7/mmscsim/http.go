package mmscsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/phonebook/phonebook/internal/simctl"
	"github.com/phonebook/phonebook/mm7"
)

const controlRoutes = "POST /mo, POST /report, POST /down, POST /faults, POST /resp-delay, POST /not-capable, GET /submissions, GET /reports, GET /stats"

// maxMOBytes bounds a POST /mo body (media base64 in JSON).
const maxMOBytes = 4 << 20

// ControlHandler is the HTTP control API:
//
//	POST /mo          {"from":"+8613900001111","to":"10690042","subject":"hi","text":"look",
//	                   "media":[{"content_type":"image/jpeg","name":"a.jpg","data":"<base64>"}],
//	                   "transaction_id":"..."}: optional; the same one again repeats an MO
//	POST /report      {"message_id":"...","recipient":"+86...","status":"Retrieved"}: one report now
//	POST /down        {"down":true}: close the MM7 listener; false: listen again
//	POST /faults      {"drop_every":N,"http_error_every":N,"http_error_status":503,
//	                   "fault_every":N,"fault_code":3000,"reset_every":N}: only the keys given change
//	POST /resp-delay  {"delay":"5ms"} or {"delay":"1ms-20ms"}; "0s" = answer at once
//	POST /not-capable {"prefixes":["+86137"]}
//	GET  /submissions every accepted message (?data=1 includes the parts' bytes, base64)
//	GET  /reports     delivery reports sent and the VASP's answers
//	GET  /stats       counters
func (s *Sim) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mo", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			TransactionID string `json:"transaction_id"`
			From          string `json:"from"`
			To            string `json:"to"`
			Subject       string `json:"subject"`
			Text          string `json:"text"`
			Media         []struct {
				ContentType string `json:"content_type"`
				Name        string `json:"name"`
				Data        []byte `json:"data"`
			} `json:"media"`
		}
		if !simctl.ReadJSON(w, r, &req, maxMOBytes) {
			return
		}
		if req.From == "" || req.To == "" || req.Text == "" && len(req.Media) == 0 {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"from", "to" and "text" or "media" are required`)
			return
		}
		mo := MO{TransactionID: req.TransactionID, From: req.From, To: req.To, Subject: req.Subject, Text: req.Text}
		for i, m := range req.Media {
			if m.ContentType == "" || len(m.Data) == 0 {
				simctl.WriteError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf(`media %d: "content_type" and "data" (base64) are required`, i))
				return
			}
			name := path.Base(m.Name)
			if m.Name == "" {
				name = "media" + strconv.Itoa(i+1)
			}
			mo.Media = append(mo.Media, mm7.Part{ContentType: m.ContentType, ContentID: "media" + strconv.Itoa(i+1), ContentLocation: name, Data: m.Data})
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		if err := s.InjectMO(ctx, mo); err != nil {
			simctl.WriteError(w, http.StatusBadGateway, "vasp_refused", err.Error())
			return
		}
		simctl.WriteJSON(w, http.StatusOK, map[string]string{"status": "delivered"})
	})
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			MessageID string `json:"message_id"`
			Recipient string `json:"recipient"`
			Status    string `json:"status"`
		}
		if !simctl.ReadJSON(w, r, &req, 64<<10) {
			return
		}
		if req.MessageID == "" || req.Recipient == "" {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"message_id" and "recipient" are required ("status" defaults to Retrieved)`)
			return
		}
		if req.Status == "" {
			req.Status = "Retrieved"
		}
		ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
		defer cancel()
		st, err := s.SendReport(ctx, req.MessageID, req.Recipient, req.Status)
		var se *mm7.StatusError
		switch {
		case errors.As(err, &se):
			simctl.WriteJSON(w, http.StatusOK, map[string]any{"status": se.Status})
		case err != nil:
			simctl.WriteError(w, http.StatusBadGateway, "vasp_unreachable", err.Error())
		default:
			simctl.WriteJSON(w, http.StatusOK, map[string]any{"status": st})
		}
	})
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Down *bool `json:"down"`
		}
		if !simctl.ReadJSON(w, r, &req, 64<<10) {
			return
		}
		if req.Down == nil {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"down" (true or false) is required`)
			return
		}
		if err := s.SetDown(*req.Down); err != nil {
			simctl.WriteError(w, http.StatusServiceUnavailable, "unavailable", err.Error())
			return
		}
		simctl.WriteJSON(w, http.StatusOK, map[string]bool{"down": s.Down()})
	})
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			DropEvery       *int `json:"drop_every"`
			HTTPErrorEvery  *int `json:"http_error_every"`
			HTTPErrorStatus *int `json:"http_error_status"`
			FaultEvery      *int `json:"fault_every"`
			FaultCode       *int `json:"fault_code"`
			ResetEvery      *int `json:"reset_every"`
		}
		if !simctl.ReadJSON(w, r, &req, 64<<10) {
			return
		}
		for _, v := range []*int{req.DropEvery, req.HTTPErrorEvery, req.FaultEvery, req.ResetEvery} {
			if v != nil && *v < 0 {
				simctl.WriteError(w, http.StatusBadRequest, "invalid_request", "every-N values must be 0 or more (0 = off)")
				return
			}
		}
		if req.HTTPErrorStatus != nil && (*req.HTTPErrorStatus < 400 || *req.HTTPErrorStatus > 599) {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"http_error_status" must be 400-599`)
			return
		}
		if req.FaultCode != nil && (*req.FaultCode < 2000 || *req.FaultCode > 9999) {
			simctl.WriteError(w, http.StatusBadRequest, "invalid_request", `"fault_code" must be an MM7 error status, 2000-9999`)
			return
		}
		if req.DropEvery != nil {
			s.SetDropEvery(*req.DropEvery)
		}
		if req.HTTPErrorEvery != nil || req.HTTPErrorStatus != nil {
			s.SetHTTPErrorEvery(deref(req.HTTPErrorEvery, int(s.httpErrEvery.Load())), deref(req.HTTPErrorStatus, 0))
		}
		if req.FaultEvery != nil || req.FaultCode != nil {
			s.SetFaultEvery(deref(req.FaultEvery, int(s.faultEvery.Load())), deref(req.FaultCode, 0))
		}
		if req.ResetEvery != nil {
			s.SetResetEvery(*req.ResetEvery)
		}
		simctl.WriteJSON(w, http.StatusOK, s.faults())
	})
	mux.HandleFunc("POST /resp-delay", simctl.SetRespDelay(&s.respDelay))
	mux.HandleFunc("POST /not-capable", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Prefixes []string `json:"prefixes"`
		}
		if !simctl.ReadJSON(w, r, &req, 64<<10) {
			return
		}
		s.SetNotCapable(req.Prefixes)
		simctl.WriteJSON(w, http.StatusOK, map[string][]string{"prefixes": req.Prefixes})
	})
	mux.HandleFunc("GET /submissions", func(w http.ResponseWriter, r *http.Request) {
		subs := s.Submissions()
		type partView struct {
			mm7.Part
			Size int `json:"size"`
		}
		type subView struct {
			Submission
			Parts []partView `json:"parts"`
		}
		out := make([]subView, 0, len(subs))
		withData := r.URL.Query().Get("data") == "1"
		for _, sub := range subs {
			v := subView{Submission: sub, Parts: []partView{}}
			for _, p := range sub.Parts {
				pv := partView{Part: p, Size: len(p.Data)}
				if !withData {
					pv.Data = nil
				}
				v.Parts = append(v.Parts, pv)
			}
			out = append(out, v)
		}
		simctl.WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /reports", func(w http.ResponseWriter, r *http.Request) {
		reports := s.Reports()
		if reports == nil {
			reports = []Report{}
		}
		simctl.WriteJSON(w, http.StatusOK, reports)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		simctl.WriteJSON(w, http.StatusOK, s.Stats())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		simctl.WriteError(w, http.StatusNotFound, "not_found", fmt.Sprintf("no %s %s; see %s", r.Method, r.URL.Path, controlRoutes))
	})
	return mux
}

func deref(p *int, def int) int {
	if p == nil {
		return def
	}
	return *p
}

func (s *Sim) faults() map[string]int64 {
	return map[string]int64{
		"drop_every": s.dropEvery.Load(), "http_error_every": s.httpErrEvery.Load(), "http_error_status": s.httpErrStatus.Load(),
		"fault_every": s.faultEvery.Load(), "fault_code": s.faultCode.Load(), "reset_every": s.resetEvery.Load(),
	}
}

// StartHTTP serves ControlHandler on addr until Close; it returns the address.
func (s *Sim) StartHTTP(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("mmscsim http: %w", err)
	}
	srv := &http.Server{Handler: s.ControlHandler(), ReadHeaderTimeout: 5 * time.Second}
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	select {
	case <-s.closed:
		ln.Close()
		return "", errors.New("mmscsim: closed")
	default:
	}
	s.ctrlSrv = srv
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Warn("mmscsim: control http", "err", err)
		}
	}()
	return ln.Addr().String(), nil
}
