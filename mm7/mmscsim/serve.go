package mmscsim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/phonebook/phonebook/mm7"
)

// serveMM7 takes one MM7 request from the VASP.
func (s *Sim) serveMM7(w http.ResponseWriter, r *http.Request) {
	n := s.reqN.Add(1)
	s.count(func(st *Stats) { st.Requests++ })
	if every := s.dropEvery.Load(); every > 0 && n%every == 0 {
		s.count(func(st *Stats) { st.Dropped++ })
		reset(w)
		return
	}
	if !mm7.CheckBasicAuth(r, s.cfg.Username, s.cfg.Password) {
		s.count(func(st *Stats) { st.Unauthorized++ })
		w.Header().Set("WWW-Authenticate", `Basic realm="mmsc"`)
		mm7.WriteFault(w, nil, mm7.ErrUnauthorized)
		return
	}
	req, err := mm7.ReadRequest(r, s.cfg.MaxBytes)
	if err == nil && req.Submit == nil {
		err = &mm7.StatusError{Op: req.Op, HTTPStatus: http.StatusBadRequest,
			Status: mm7.NewStatus(mm7.StatusUnsupportedOperation, req.Op+" is not taken by this MMSC (SubmitReq only)")}
	}
	if err != nil {
		s.count(func(st *Stats) { st.BadRequests++ })
		s.log.Info("mmscsim: bad request", "remote", r.RemoteAddr, "err", err)
		mm7.WriteFault(w, req, err)
		return
	}
	if every := s.httpErrEvery.Load(); every > 0 && n%every == 0 {
		s.count(func(st *Stats) { st.HTTPErrors++ })
		code := int(s.httpErrStatus.Load())
		http.Error(w, http.StatusText(code), code)
		return
	}
	if every := s.faultEvery.Load(); every > 0 && n%every == 0 {
		s.count(func(st *Stats) { st.Faults++ })
		mm7.WriteFault(w, req, &mm7.StatusError{HTTPStatus: http.StatusInternalServerError,
			Status: mm7.NewStatus(int(s.faultCode.Load()), "simulated fault")})
		return
	}
	sub := req.Submit
	for _, to := range sub.To {
		if s.isNotCapable(to) {
			s.count(func(st *Stats) { st.NotCapable++ })
			fmt.Fprintf(s.cfg.Output, "mmscsim: refused MMS to %s: not MMS capable\n", to)
			text := "recipient " + to + " is not MMS capable"
			if s.cfg.NotCapableText != "" {
				text = strings.ReplaceAll(s.cfg.NotCapableText, "{to}", to)
			}
			mm7.WriteResponse(w, req, mm7.NewStatus(s.cfgNotCapableCode(), text), "")
			return
		}
	}
	id, n := s.newMessageID()
	rec := Submission{
		TransactionID: req.TransactionID, MessageID: id, Version: req.Version,
		VASPID: sub.VASPID, VASID: sub.VASID, ServiceCode: sub.ServiceCode, Sender: sub.SenderAddress,
		To: sub.To, Subject: sub.Subject, LinkedID: sub.LinkedID, DeliveryReport: sub.DeliveryReport,
		SMIL: string(sub.SMIL), Parts: sub.Parts, Bytes: int(r.ContentLength), Time: time.Now(),
	}
	lose := false
	if every := s.resetEvery.Load(); every > 0 && s.acceptedN.Add(1)%every == 0 {
		lose, rec.ResponseLost = true, true
	}
	s.mu.Lock()
	s.record(rec)
	s.mu.Unlock()
	s.print(rec)

	if rec.DeliveryReport && s.vasp != nil {
		status := s.reportStatus(n)
		for _, to := range rec.To {
			r := s.addReport(Report{MessageID: rec.MessageID, Recipient: to, MMStatus: status})
			if s.cfg.ReportBeforeResp {
				if !s.sendReport(r, rec.Sender) {
					s.goReport(r, rec.Sender, s.cfg.RedeliverAfter)
				}
				continue
			}
			s.goReport(r, rec.Sender, s.cfg.ReportDelay)
		}
	}
	if !s.sleep(s.respDelay.Load().Pick()) {
		return
	}
	if lose {
		s.count(func(st *Stats) { st.Resets++ })
		reset(w)
		return
	}
	mm7.WriteResponse(w, req, mm7.NewStatus(mm7.StatusSuccess, ""), rec.MessageID)
}

func (s *Sim) cfgNotCapableCode() int { return s.cfg.NotCapableCode }

// reset drops the connection with a TCP RST: no answer at all.
func reset(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok { // *tls.Conn
		raw = nc.NetConn()
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	conn.Close()
}

var mixed = []string{"Retrieved", "Rejected", "Expired"}

// reportStatus is the MMStatus of the reports for the nth message.
func (s *Sim) reportStatus(n int64) string {
	if strings.EqualFold(s.cfg.ReportStatus, "MIXED") {
		return mixed[int((n-1)%int64(len(mixed)))]
	}
	return canonicalMMStatus(s.cfg.ReportStatus)
}

func (s *Sim) addReport(r Report) *Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, &r)
	if n := len(s.reports); n >= 2*s.cfg.Keep {
		s.reports = slices.Clone(s.reports[n-s.cfg.Keep:])
	}
	s.notify()
	return &r
}

// goReport sends report r after wait, and again until it is done.
func (s *Sim) goReport(r *Report, sender string, wait time.Duration) {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	select {
	case <-s.closed:
		return // a request still running when the simulator closed
	default:
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for s.sleep(wait) && !s.sendReport(r, sender) {
			wait = s.cfg.RedeliverAfter
		}
	}()
}

// sendReport makes one attempt at report rp; true when it is done.
func (s *Sim) sendReport(rp *Report, sender string) bool {
	s.mu.Lock()
	r := *rp
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	st, err := s.vasp.DeliveryReport(ctx, &mm7.DeliveryReportReq{MessageID: r.MessageID, Recipient: r.Recipient, Sender: sender,
		Date: time.Now(), MMStatus: r.MMStatus, StatusText: r.MMStatus})
	s.mu.Lock()
	defer s.mu.Unlock()
	rp.Attempts++
	rp.Status, rp.Error = st, ""
	var se *mm7.StatusError
	switch {
	case err == nil:
		s.stats.ReportsSent++
		rp.Done = true
	case errors.As(err, &se) && !se.Status.Temporary():
		s.stats.ReportsFailed++
		rp.Status, rp.Error, rp.Done = se.Status, err.Error(), true
	default:
		s.stats.ReportsFailed++
		rp.Error = err.Error()
		if errors.As(err, &se) {
			rp.Status = se.Status
		}
		rp.Done = rp.Attempts >= s.cfg.ReportAttempts
	}
	s.notify()
	return rp.Done
}

// SendReport sends a delivery report for messageID to recipient now (one
// attempt), whether or not the message exists: for tests of unknown ids.
func (s *Sim) SendReport(ctx context.Context, messageID, recipient, mmStatus string) (mm7.Status, error) {
	if s.vasp == nil {
		return mm7.Status{}, errors.New("mmscsim: no VASP URL configured")
	}
	if m := canonicalMMStatus(mmStatus); m != "" {
		mmStatus = m
	}
	return s.vasp.DeliveryReport(ctx, &mm7.DeliveryReportReq{MessageID: messageID, Recipient: recipient, Date: time.Now(), MMStatus: mmStatus})
}

// MO is a mobile-originated MMS to inject.
type MO struct {
	// TransactionID of the DeliverReq; "" = a new one. Sending an MO
	// again under the same one is what an MMSC does when it lost the
	// VASP's answer.
	TransactionID string
	From          string // the phone, e.g. +8613900001111
	To            string // the VASP's short number
	Subject       string
	Text          string     // sent as a text part (mm7.CaptionPart) and shown by the SMIL
	Media         []mm7.Part // images, audio ...; each needs a ContentID or ContentLocation
}

// InjectMO sends mo to the VASP as a DeliverReq with a SMIL presentation
// (one attempt) and returns the VASP's answer.
func (s *Sim) InjectMO(ctx context.Context, mo MO) error {
	if s.vasp == nil {
		return errors.New("mmscsim: no VASP URL configured")
	}
	if mo.From == "" || mo.To == "" {
		return errors.New("mmscsim: an MO needs from and to")
	}
	parts := append([]mm7.Part(nil), mo.Media...)
	if mo.Text != "" {
		parts = append(parts, mm7.CaptionPart(mo.Text))
	}
	linked, _ := s.newMessageID()
	req := &mm7.DeliverReq{TransactionID: mo.TransactionID, LinkedID: "mo-" + linked, Sender: mo.From, Recipients: []string{mo.To},
		Subject: mo.Subject, Parts: parts, SMIL: mm7.BuildSMIL(mo.Media, mo.Text), Received: time.Now()}
	if req.TransactionID == "" {
		req.TransactionID = mm7.NewTransactionID()
	}
	if every := int64(s.cfg.RepeatMOEvery); every > 0 && s.moN.Add(1)%every == 0 {
		// The first answer is "lost": the same request goes again.
		s.vasp.Deliver(ctx, req)
		s.count(func(st *Stats) { st.MOsRepeated++ })
	}
	_, err := s.vasp.Deliver(ctx, req)
	s.count(func(st *Stats) {
		if err != nil {
			st.MOsFailed++
		} else {
			st.MOs++
		}
	})
	return err
}

// print writes one line per accepted message, text parts shown.
func (s *Sim) print(rec Submission) {
	var parts []string
	for _, p := range rec.Parts {
		if strings.HasPrefix(p.ContentType, "text/") && utf8.Valid(p.Data) {
			parts = append(parts, fmt.Sprintf("%q", truncate(string(p.Data), 160)))
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %d B", p.ContentType, len(p.Data)))
	}
	fmt.Fprintf(s.cfg.Output, "mmscsim: MMS to %s from %s (message id %s) %q: %s\n",
		strings.Join(rec.To, ","), rec.Sender, rec.MessageID, rec.Subject, strings.Join(parts, ", "))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
