package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/store"
)

var pageNames = []string{"login", "overview", "number", "confirm", "audit", "error"}

func parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"ago":  ago,
		"when": when,
		"path": url.PathEscape,
		"text": smsText,
	}
	out := map[string]*template.Template{}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

// page is what every template gets.
type page struct {
	Title string
	Node  string
	Op    *operator
	Nonce string
	Data  any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name string, op *operator, data any) {
	var buf bytes.Buffer
	title := name
	if t, ok := data.(interface{ title() string }); ok {
		title = t.title()
	}
	err := c.tmpl[name].Execute(&buf, page{Title: title, Node: c.cfg.Node, Op: op, Nonce: nonceOf(r), Data: data})
	if err != nil {
		c.log.Error("console: render", "page", name, "err", err)
		http.Error(w, "internal: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorData struct{ Code, Message string }

func (e errorData) title() string { return "Error" }

// fail shows an error page: the code for machines, a sentence for people.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, op *operator, status int, code, msg string) {
	c.render(w, r, status, "error", op, errorData{Code: code, Message: msg})
}

// failErr maps a service error to an error page.
func (c *Console) failErr(w http.ResponseWriter, r *http.Request, op *operator, err error) {
	code := phonebook.ErrorCode(err)
	status := http.StatusInternalServerError
	msg := "Something went wrong on the server; it is in the log."
	switch code {
	case phonebook.ENotFound:
		status, msg = http.StatusNotFound, err.Error()
	case phonebook.EInvalid, phonebook.EInvalidNumber, phonebook.ETooLarge:
		status, msg = http.StatusBadRequest, err.Error()
	case phonebook.EConflict:
		status, msg = http.StatusConflict, err.Error()
	case phonebook.EUnavailable:
		status, msg = http.StatusServiceUnavailable, err.Error()
	default:
		c.log.Error("console: request failed", "path", r.URL.Path, "err", err)
	}
	var pe *phonebook.Error
	if errors.As(err, &pe) && code != phonebook.EInternal {
		msg = pe.Message
	}
	c.fail(w, r, op, status, string(code), msg)
}

// ---- overview ----

type linkView struct {
	smsc.LinkState
	TPS float64
}

type connGroup struct {
	Node      string `json:"node"`
	Transport string `json:"transport"`
	Count     int    `json:"count"`
}

type overviewData struct {
	Links      []linkView
	Outbox     store.OutboxOverview
	OutboxErr  string
	InFlight   int // submits waiting for submit_sm_resp on this node's links
	Conns      []connGroup
	TotalConns int
	Live       map[string]string
}

func (overviewData) title() string { return "Overview" }

func (c *Console) collectOverview(r *http.Request) overviewData {
	var d overviewData
	if c.svc.Links != nil {
		for _, l := range c.svc.Links() {
			d.Links = append(d.Links, linkView{LinkState: l, TPS: c.sampler.perSecond(linkPrefix+l.Name, time.Minute)})
			d.InFlight += l.InFlight
		}
	}
	o, err := c.outboxOverview(r.Context())
	if err != nil {
		c.log.Warn("console: outbox overview", "err", err)
		d.OutboxErr = "the store did not answer"
	}
	d.Outbox = o
	var conns []relay.ConnInfo
	if c.svc.Connections != nil {
		conns = c.svc.Connections()
	}
	d.Conns, d.TotalConns = groupConns(conns)
	d.Live = c.liveValues(d)
	return d
}

// outboxOverview counts the outbox at most once every OutboxEvery, however
// many pages and streams ask: the counts read index ranges that grow with
// the traffic (about 0.3 s on MariaDB for 200,000 messages,
// BenchmarkSMSOverview), and every open console would repeat them.
func (c *Console) outboxOverview(ctx context.Context) (store.OutboxOverview, error) {
	c.outboxMu.Lock()
	defer c.outboxMu.Unlock()
	if time.Since(c.outboxAt) < c.cfg.OutboxEvery {
		return c.outbox, nil
	}
	o, err := c.svc.Store.SMSOverview(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		return o, err
	}
	c.outbox, c.outboxAt = o, time.Now()
	return o, nil
}

func groupConns(conns []relay.ConnInfo) ([]connGroup, int) {
	counts := map[[2]string]int{}
	for _, ci := range conns {
		counts[[2]string{ci.Node, ci.Transport}]++
	}
	out := make([]connGroup, 0, len(counts))
	for k, n := range counts {
		out = append(out, connGroup{Node: k[0], Transport: k[1], Count: n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Node != out[j].Node {
			return out[i].Node < out[j].Node
		}
		return out[i].Transport < out[j].Transport
	})
	return out, len(conns)
}

func perMinute(x float64) string { return strconv.FormatFloat(x*60, 'f', 1, 64) }

// liveValues are the overview's numbers by the name of the element that
// shows each (data-live="..."): the page renders them, and the live stream
// sends them again every Interval.
func (c *Console) liveValues(d overviewData) map[string]string {
	s := c.sampler
	v := map[string]string{
		"outbox.queued":     strconv.FormatInt(d.Outbox.Queued, 10),
		"outbox.inflight":   strconv.Itoa(d.InFlight),
		"outbox.submitted":  strconv.FormatInt(d.Outbox.Submitted, 10),
		"outbox.failed":     strconv.FormatInt(d.Outbox.Failed, 10),
		"outbox.oldest":     "none",
		"relay.connections": strconv.Itoa(d.TotalConns),
		"rate.logins":       perMinute(s.perSecond(cLogins, time.Minute)),
		"rate.login_fail":   perMinute(s.perSecond(cLoginsFailed, time.Minute)),
		"rate.verify":       perMinute(s.perSecond(cVerifyStarts, time.Minute)),
		"rate.verified":     perMinute(s.perSecond(cVerified, time.Minute)),
		"rate.refusals":     perMinute(s.perSecond(cRefusals, time.Minute)),
		"rate.relay":        perMinute(s.perSecond(cRelayMsgs, time.Minute)),
		"total.logins":      strconv.FormatFloat(s.latest(cLogins), 'f', 0, 64),
		"total.relay":       strconv.FormatFloat(s.latest(cRelayMsgs), 'f', 0, 64),
		"total.refusals":    strconv.FormatFloat(s.latest(cRefusals), 'f', 0, 64),
	}
	if !d.Outbox.Oldest.IsZero() {
		v["outbox.oldest"] = ago(d.Outbox.Oldest)
	}
	for _, l := range d.Links {
		state := "down"
		if l.Bound {
			state = "bound since " + when(l.Since)
		}
		v["link."+l.Name+".state"] = state
		v["link."+l.Name+".window"] = fmt.Sprintf("%d / %d", l.InFlight, l.Window)
		v["link."+l.Name+".tps"] = strconv.FormatFloat(l.TPS, 'f', 1, 64)
		v["link."+l.Name+".error"] = l.LastError
	}
	return v
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, op *operator) {
	c.render(w, r, http.StatusOK, "overview", op, c.collectOverview(r))
}

// ---- a number ----

// number reads the {number} path value: any format the phone book might
// hold, normalised to E.164.
func (c *Console) number(r *http.Request) (phonebook.MSISDN, error) {
	return phonebook.NormalizeMSISDN(r.PathValue("number"), c.cfg.Region)
}

func numberPath(n phonebook.MSISDN) string { return Prefix + "numbers/" + url.PathEscape(string(n)) }

func (c *Console) findNumber(w http.ResponseWriter, r *http.Request, op *operator) {
	raw := r.URL.Query().Get("n")
	n, err := phonebook.NormalizeMSISDN(raw, c.cfg.Region)
	if err != nil {
		c.failErr(w, r, op, err)
		return
	}
	http.Redirect(w, r, numberPath(n), http.StatusSeeOther)
}

type numberData struct {
	Number   phonebook.MSISDN
	User     *store.User
	Sessions []store.Session
	Conns    []relay.ConnInfo
	SMS      []store.SMSWithParts
	OptOuts  []store.SMSOptOut
	Audit    []store.AuditEntry
	Done     string
}

func (d numberData) title() string { return string(d.Number) }

// doneMessages are the confirmations shown after an action (?done=...):
// only these fixed sentences, never text from the address.
var doneMessages = map[string]string{
	"block":   "Blocked: logins are refused and its sessions were revoked.",
	"unblock": "Unblocked: the account can log in again.",
	"revoke":  "Sessions revoked: its devices must log in again.",
	"resend":  "The SMS was queued again.",
}

func (c *Console) numberPage(w http.ResponseWriter, r *http.Request, op *operator) {
	n, err := c.number(r)
	if err != nil {
		c.failErr(w, r, op, err)
		return
	}
	ctx := r.Context()
	d := numberData{Number: n, Done: doneMessages[r.URL.Query().Get("done")]}
	d.User, err = c.svc.Store.User(ctx, n)
	if err != nil && phonebook.ErrorCode(err) != phonebook.ENotFound {
		c.failErr(w, r, op, err)
		return
	}
	if d.User != nil {
		if d.Sessions, err = c.svc.Store.Sessions(ctx, n, 50); err != nil {
			c.failErr(w, r, op, err)
			return
		}
	}
	if c.svc.Connections != nil {
		for _, ci := range c.svc.Connections() {
			if ci.Number == n {
				d.Conns = append(d.Conns, ci)
			}
		}
	}
	if d.SMS, err = c.svc.Store.RecentSMS(ctx, n, 20); err != nil {
		c.failErr(w, r, op, err)
		return
	}
	if d.OptOuts, err = c.svc.Store.SMSOptOuts(ctx, n, 50); err != nil {
		c.failErr(w, r, op, err)
		return
	}
	if d.Audit, err = c.svc.Store.Audit(ctx, string(n), 20); err != nil {
		c.failErr(w, r, op, err)
		return
	}
	c.render(w, r, http.StatusOK, "number", op, d)
}

// ---- actions ----

type actionInfo struct {
	Verb    string // the button
	Explain string // what will happen
	Audit   string // the audit log's action name
	Account bool   // needs an account
}

var actions = map[string]actionInfo{
	"block":   {"Block", "Every login of this number will be refused and its sessions revoked: its devices are disconnected, at once on this node and within relay.reauth_interval on the others.", "block", true},
	"unblock": {"Unblock", "The number will be able to log in again. Sessions revoked by the block stay revoked.", "unblock", true},
	"revoke":  {"Revoke sessions", "Every session of this number ends: its devices are disconnected and must log in again.", "revoke_sessions", true},
	"resend":  {"Resend SMS", "The SMS will be queued again as a new message with the same text, sender and reference.", "resend_sms", false},
}

type confirmData struct {
	Number phonebook.MSISDN
	Action string
	Info   actionInfo
	SMS    *store.SMS
}

func (d confirmData) title() string { return d.Info.Verb + " " + string(d.Number) }

// actionTarget validates an action request: the number, the action, and
// for a resend the SMS, which must be this number's and have failed.
func (c *Console) actionTarget(r *http.Request, action, smsID string) (confirmData, error) {
	n, err := c.number(r)
	if err != nil {
		return confirmData{}, err
	}
	info, ok := actions[action]
	if !ok {
		return confirmData{}, phonebook.Errorf(phonebook.EInvalid, "unknown action %q: block, unblock, revoke or resend", action)
	}
	d := confirmData{Number: n, Action: action, Info: info}
	if info.Account {
		if _, err := c.svc.Store.User(r.Context(), n); err != nil {
			return d, err
		}
	}
	if action == "resend" {
		id, err := strconv.ParseInt(smsID, 10, 64)
		if err != nil || id <= 0 {
			return d, phonebook.Errorf(phonebook.EInvalid, "sms must be the id of an SMS in the outbox")
		}
		m, _, err := c.svc.Store.GetSMS(r.Context(), id)
		if err != nil {
			return d, err
		}
		if m.Dest != string(n) {
			return d, phonebook.Errorf(phonebook.EInvalid, "SMS %d was not sent to %s", id, n)
		}
		if !store.SMSFinishedBadly(m.State) {
			return d, phonebook.Errorf(phonebook.EConflict, "SMS %d is %s: only failed, expired or undeliverable SMS can be resent", id, m.State)
		}
		d.SMS = &m
	}
	return d, nil
}

func (c *Console) confirmPage(w http.ResponseWriter, r *http.Request, op *operator) {
	q := r.URL.Query()
	d, err := c.actionTarget(r, q.Get("action"), q.Get("sms"))
	if err != nil {
		c.failErr(w, r, op, err)
		return
	}
	c.render(w, r, http.StatusOK, "confirm", op, d)
}

// action carries out a confirmed action: the form must come from the
// confirmation page (CSRF token, confirm=yes).
func (c *Console) action(w http.ResponseWriter, r *http.Request, op *operator) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if !op.csrfOK(r) {
		c.fail(w, r, op, http.StatusForbidden, "csrf", "The form is stale or came from another site: reload the page and try again.")
		return
	}
	action, smsID := r.PostFormValue("action"), r.PostFormValue("sms")
	d, err := c.actionTarget(r, action, smsID)
	if err != nil {
		c.failErr(w, r, op, err)
		return
	}
	if r.PostFormValue("confirm") != "yes" {
		c.fail(w, r, op, http.StatusBadRequest, "not_confirmed",
			"Nothing was done: actions must be confirmed on their confirmation page first.")
		return
	}
	ctx := r.Context()
	var detail string
	switch action {
	case "block":
		var revoked int64
		if revoked, err = c.svc.Accounts.Block(ctx, d.Number); err == nil {
			detail = fmt.Sprintf("%d sessions revoked", revoked)
		}
	case "unblock":
		err = c.svc.Accounts.Unblock(ctx, d.Number)
	case "revoke":
		var revoked int64
		if revoked, err = c.svc.Accounts.RevokeSessions(ctx, d.Number); err == nil {
			detail = fmt.Sprintf("%d sessions revoked", revoked)
		}
	case "resend":
		var id int64
		id, err = c.svc.Outbox.Enqueue(ctx, smsc.SMS{To: d.Number, From: d.SMS.Source, Text: d.SMS.Text, Kind: d.SMS.Kind, Ref: d.SMS.Ref})
		if err == nil {
			detail = fmt.Sprintf("sms %d queued again as %d", d.SMS.ID, id)
		}
	}
	if err != nil {
		c.audit(r, op, d.Info.Audit+"_failed", string(d.Number), err.Error())
		c.failErr(w, r, op, err)
		return
	}
	c.audit(r, op, d.Info.Audit, string(d.Number), detail)
	http.Redirect(w, r, numberPath(d.Number)+"?done="+action, http.StatusSeeOther)
}

// ---- audit log ----

type auditData struct{ Entries []store.AuditEntry }

func (auditData) title() string { return "Audit log" }

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request, op *operator) {
	entries, err := c.svc.Store.Audit(r.Context(), "", 200)
	if err != nil {
		c.failErr(w, r, op, err)
		return
	}
	c.render(w, r, http.StatusOK, "audit", op, auditData{Entries: entries})
}

// ---- formatting ----

// smsText is an SMS's text as the console shows it: verification codes
// are hidden (every digit of a "verify" SMS), so that a screen or a
// screenshot of the console cannot be used to take over a number.
func smsText(m store.SMS) string {
	if m.Kind != "verify" {
		return m.Text
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsDigit(r) {
			return '•'
		}
		return r
	}, m.Text)
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm %ds ago", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh %dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}
