package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc/smscsim"
	"github.com/phonebook/phonebook/store"
)

const consoleToken = "console-test-token-0123456789"

// hostileText is a verification template full of markup: the console must
// show it as text.
const hostileText = `<script>alert("pwned")</script><img src=x onerror=alert(1)> {code} ' " &amp;`

// consoleMain starts a full server with an admin token whose SMS go to a
// simulator that refuses every destination under +86137 (ESME_RINVDSTADR:
// those SMS fail at once), with a verification text full of markup.
func consoleMain(t *testing.T, mutate ...func(*config.Config)) (*Main, string) {
	t.Helper()
	sim := smscsim.New(smscsim.Config{RejectPrefixes: []string{"+86137"}, ReceiptDelay: 10 * time.Millisecond})
	if err := sim.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sim.Close)
	cfg := testConfig(t)
	cfg.Admin.Token = consoleToken
	cfg.SMSC.Simulator = false
	cfg.SMSC.Links = []config.Link{{Name: "sim-a", Addr: sim.Addr(), SystemID: "phonebook", Bind: "transceiver", SourceAddr: "10690", Window: 10}}
	cfg.Verify.Template = hostileText
	for _, f := range mutate {
		f(&cfg)
	}
	m := startMain(t, cfg)
	return m, "http://" + m.AdminAddr()
}

// browserish is a client that keeps cookies and does not follow redirects,
// so tests see every answer.
func browserish(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type answer struct {
	code     int
	body     string
	location string
}

func send(t *testing.T, c *http.Client, method, u string, form url.Values, header ...string) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "text/html")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, string(b), res.Header.Get("Location")}
}

// signIn signs name in through the form and returns the client holding the
// session cookie.
func signIn(t *testing.T, base, name string) *http.Client {
	t.Helper()
	c := browserish(t)
	a := send(t, c, "POST", base+"/console/login", url.Values{"name": {name}, "token": {consoleToken}})
	if a.code != http.StatusSeeOther || a.location != "/console/" {
		t.Fatalf("sign in: %d %q %.300s", a.code, a.location, a.body)
	}
	return c
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field in %.500s", body)
	}
	return m[1]
}

// waitFor polls cond until it holds or the test runs out of patience.
var waitFor = poll.Until

// Without the admin token every console path answers 401: no page, no
// stream, no action, no static file, and no sign-in with a wrong token.
func TestConsoleEveryPathNeedsToken(t *testing.T) {
	m, base := consoleMain(t)
	c := browserish(t)
	// Not on the public listener at all.
	if a := send(t, c, "GET", "http://"+m.HTTPAddr()+"/console/", nil, "Authorization", "Bearer "+consoleToken); a.code != http.StatusNotFound {
		t.Errorf("public /console/: %d, want 404", a.code)
	}
	paths := []struct{ method, path string }{
		{"GET", "/console/"}, {"GET", "/console"}, {"GET", "/console/login"}, {"GET", "/console/events"},
		{"GET", "/console/number?n=13800138000"}, {"GET", "/console/numbers/+8613800138000"},
		{"GET", "/console/numbers/+8613800138000/confirm?action=block"}, {"GET", "/console/audit"},
		{"GET", "/console/static/console.js"}, {"GET", "/console/no-such-page"},
		{"POST", "/console/numbers/+8613800138000/actions"}, {"POST", "/console/logout"}, {"POST", "/console/"},
	}
	for _, p := range paths {
		a := send(t, c, p.method, base+p.path, url.Values{"action": {"block"}, "confirm": {"yes"}})
		if a.code != http.StatusUnauthorized {
			t.Errorf("%s %s without token: %d, want 401", p.method, p.path, a.code)
		}
		if strings.Contains(a.body, "+8613800138000") || strings.Contains(a.body, "alert") {
			t.Errorf("%s %s without token leaks content: %.300s", p.method, p.path, a.body)
		}
	}
	for _, tok := range []string{"wrong", consoleToken + "x"} {
		if a := send(t, c, "GET", base+"/console/", nil, "Authorization", "Bearer "+tok); a.code != http.StatusUnauthorized {
			t.Errorf("bearer %q: %d, want 401", tok, a.code)
		}
	}
	a := send(t, c, "POST", base+"/console/login", url.Values{"name": {"mallory"}, "token": {"guess"}})
	if a.code != http.StatusUnauthorized || !strings.Contains(a.body, "Wrong token") {
		t.Errorf("sign in with a wrong token: %d %.300s", a.code, a.body)
	}
	// The right token works, as a bearer token and through the form.
	if a := send(t, c, "GET", base+"/console/", nil, "Authorization", "Bearer "+consoleToken); a.code != 200 || !strings.Contains(a.body, "SMS outbox") {
		t.Errorf("bearer: %d %.300s", a.code, a.body)
	}
	s := signIn(t, base, "alice")
	if a := send(t, s, "GET", base+"/console/", nil); a.code != 200 || !strings.Contains(a.body, "Sign out (alice)") {
		t.Errorf("signed in: %d %.300s", a.code, a.body)
	}
	// Signing out ends the session.
	page := send(t, s, "GET", base+"/console/", nil)
	if a := send(t, s, "POST", base+"/console/logout", url.Values{"csrf": {csrfOf(t, page.body)}}); a.code != http.StatusSeeOther {
		t.Errorf("sign out: %d", a.code)
	}
	if a := send(t, s, "GET", base+"/console/", nil); a.code != http.StatusUnauthorized {
		t.Errorf("after sign out: %d, want 401", a.code)
	}
}

// With no admin.token the console is off, and says how to turn it on.
func TestConsoleOffWithoutToken(t *testing.T) {
	_, base := consoleMain(t, func(c *config.Config) { c.Admin.Token = "" })
	c := browserish(t)
	for _, p := range []string{"/console/", "/console/login", "/console/audit"} {
		if a := send(t, c, "GET", base+p, nil); a.code != http.StatusUnauthorized || !strings.Contains(a.body, "set admin.token") {
			t.Errorf("%s: %d %.300s", p, a.code, a.body)
		}
	}
	if a := send(t, c, "POST", base+"/console/login", url.Values{"name": {"x"}, "token": {""}}); a.code != http.StatusUnauthorized {
		t.Errorf("sign in with an empty token: %d", a.code)
	}
}

// Block, unblock, revoke sessions and resend a failed SMS: each needs its
// confirmation and the form's CSRF token, does what it says (the relay
// drops a blocked user at once), and is in the audit log with who did it.
func TestConsoleActions(t *testing.T) {
	m, base := consoleMain(t)
	ctx := context.Background()
	phone(t, m, "13800138000") // connected to the relay
	n := phonebook.MSISDN("+8613800138000")
	c := signIn(t, base, "operator-ann")
	numberURL := base + "/console/numbers/" + url.PathEscape(string(n))

	page := send(t, c, "GET", base+"/console/number?n="+url.QueryEscape("138 0013 8000"), nil)
	if page.code != http.StatusSeeOther || page.location != "/console/numbers/+8613800138000" {
		t.Fatalf("find number: %d %q", page.code, page.location)
	}
	page = send(t, c, "GET", numberURL, nil)
	if page.code != 200 || !strings.Contains(page.body, "active") || !strings.Contains(page.body, "imei-13800138000") {
		t.Fatalf("number page: %d %.500s", page.code, page.body)
	}
	if !strings.Contains(page.body, `data-live="number.connections">1<`) {
		t.Errorf("number page does not show the live connection: %.2000s", page.body)
	}

	conf := send(t, c, "GET", numberURL+"/confirm?action=block", nil)
	if conf.code != 200 || !strings.Contains(conf.body, "Yes, Block") {
		t.Fatalf("confirm page: %d %.500s", conf.code, conf.body)
	}
	csrf := csrfOf(t, conf.body)
	valid := func() bool {
		u, err := m.DB.User(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		return u.Valid
	}
	// Refused: no confirmation; no CSRF token; a wrong one; a cross-site form.
	for _, tc := range []struct {
		name   string
		form   url.Values
		header []string
		code   int
	}{
		{"unconfirmed", url.Values{"csrf": {csrf}, "action": {"block"}}, nil, http.StatusBadRequest},
		{"no csrf", url.Values{"action": {"block"}, "confirm": {"yes"}}, nil, http.StatusForbidden},
		{"wrong csrf", url.Values{"csrf": {csrf + "x"}, "action": {"block"}, "confirm": {"yes"}}, nil, http.StatusForbidden},
		{"cross-site", url.Values{"csrf": {csrf}, "action": {"block"}, "confirm": {"yes"}}, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden},
		{"unknown action", url.Values{"csrf": {csrf}, "action": {"delete"}, "confirm": {"yes"}}, nil, http.StatusBadRequest},
	} {
		a := send(t, c, "POST", numberURL+"/actions", tc.form, tc.header...)
		if a.code != tc.code {
			t.Errorf("%s: %d, want %d: %.300s", tc.name, a.code, tc.code, a.body)
		}
		if !valid() {
			t.Fatalf("%s: the account was blocked anyway", tc.name)
		}
	}
	if a := send(t, c, "POST", numberURL+"/actions", url.Values{"csrf": {csrf}, "action": {"block"}}); !strings.Contains(a.body, "not_confirmed") {
		t.Errorf("unconfirmed answer does not say so: %.300s", a.body)
	}

	// Block: confirmed.
	a := send(t, c, "POST", numberURL+"/actions", url.Values{"csrf": {csrf}, "action": {"block"}, "confirm": {"yes"}})
	if a.code != http.StatusSeeOther || a.location != "/console/numbers/+8613800138000?done=block" {
		t.Fatalf("block: %d %q %.300s", a.code, a.location, a.body)
	}
	if valid() {
		t.Fatal("not blocked")
	}
	waitFor(t, "the relay to drop the blocked user", func() bool {
		for _, ci := range m.Relay.Connections() {
			if ci.Number == n {
				return false
			}
		}
		return true
	})
	page = send(t, c, "GET", numberURL+"?done=block", nil)
	if !strings.Contains(page.body, "Blocked: logins are refused") || !strings.Contains(page.body, `id="account-state" class="bad">blocked`) {
		t.Errorf("page after block: %.1500s", page.body)
	}

	// Unblock.
	a = send(t, c, "POST", numberURL+"/actions", url.Values{"csrf": {csrf}, "action": {"unblock"}, "confirm": {"yes"}})
	if a.code != http.StatusSeeOther || !valid() {
		t.Fatalf("unblock: %d valid=%v", a.code, valid())
	}

	// Revoke sessions: log in again, then revoke.
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", "13800138000", client.Identity{DeviceID: "imei-13800138000", SIMID: "sim-13800138000"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := api.Login(ctx, "13800138000", client.Identity{DeviceID: "imei-13800138000", SIMID: "sim-13800138000"}, creds.DeviceKey, ""); err != nil {
		t.Fatal(err)
	}
	a = send(t, c, "POST", numberURL+"/actions", url.Values{"csrf": {csrf}, "action": {"revoke"}, "confirm": {"yes"}})
	if a.code != http.StatusSeeOther {
		t.Fatalf("revoke: %d %.300s", a.code, a.body)
	}
	sessions, err := m.DB.Sessions(ctx, n, 50)
	if err != nil || len(sessions) == 0 {
		t.Fatalf("sessions: %v %v", sessions, err)
	}
	for _, s := range sessions {
		if !s.Revoked {
			t.Errorf("session of %s created %s not revoked", s.DeviceID, s.CreatedAt)
		}
	}

	// Resend: a verification code to a destination the SMSC refuses fails.
	carol := phonebook.MSISDN("+8613700137000")
	if _, err := api.StartSMS(ctx, "13700137000", client.Identity{DeviceID: "imei-c", SIMID: "sim-c"}); err != nil {
		t.Fatal(err)
	}
	var failed store.SMSWithParts
	waitFor(t, "the SMS to fail", func() bool {
		sms, err := m.DB.RecentSMS(ctx, carol, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(sms) == 1 && sms[0].State == "failed" {
			failed = sms[0]
			return true
		}
		return false
	})
	carolURL := base + "/console/numbers/" + url.PathEscape(string(carol))
	page = send(t, c, "GET", carolURL, nil)
	if page.code != 200 || !strings.Contains(page.body, "No account") || !strings.Contains(page.body, "resend-") ||
		!strings.Contains(page.body, "Not opted out") {
		t.Fatalf("number page of a non-user: %d %.1500s", page.code, page.body)
	}
	// An opt-out shows.
	if _, err := m.DB.AddSMSOptOut(ctx, carol, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if p := send(t, c, "GET", carolURL, nil); !strings.Contains(p.body, "Takes no SMS fallbacks from anyone") {
		t.Errorf("opt-out not shown: %.2000s", p.body)
	}
	// The code in a verification SMS is not shown.
	code := regexp.MustCompile(`[0-9]{6}`).FindString(failed.Text)
	if code == "" || strings.Contains(page.body, code) {
		t.Errorf("the number page shows the verification code %q (or the SMS has none: %q)", code, failed.Text)
	}
	id := failed.ID
	form := url.Values{"csrf": {csrf}, "action": {"resend"}, "sms": {itoa(id)}}
	if a := send(t, c, "POST", carolURL+"/actions", form); a.code != http.StatusBadRequest {
		t.Errorf("unconfirmed resend: %d", a.code)
	}
	// Another number's SMS, or one that did not fail, cannot be resent.
	if a := send(t, c, "GET", numberURL+"/confirm?action=resend&sms="+itoa(id), nil); a.code != http.StatusBadRequest {
		t.Errorf("resend of another number's SMS: %d", a.code)
	}
	conf = send(t, c, "GET", carolURL+"/confirm?action=resend&sms="+itoa(id), nil)
	if conf.code != 200 || !strings.Contains(conf.body, "Yes, Resend SMS") {
		t.Fatalf("resend confirm: %d %.500s", conf.code, conf.body)
	}
	form.Set("confirm", "yes")
	if a := send(t, c, "POST", carolURL+"/actions", form); a.code != http.StatusSeeOther {
		t.Fatalf("resend: %d %.300s", a.code, a.body)
	}
	sms, err := m.DB.RecentSMS(ctx, carol, 5)
	if err != nil || len(sms) != 2 || sms[0].Text != failed.Text || sms[0].Kind != failed.Kind || sms[0].ID == id {
		t.Fatalf("after resend: %+v %v", sms, err)
	}

	// The audit log has every action, with who did it.
	entries, err := m.DB.Audit(ctx, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range entries {
		if e.Actor == "operator-ann" && e.Remote == "127.0.0.1" {
			seen[e.Action+" "+e.Target] = true
		}
	}
	for _, want := range []string{"sign_in ", "block +8613800138000", "unblock +8613800138000",
		"revoke_sessions +8613800138000", "resend_sms +8613700137000"} {
		if !seen[want] {
			t.Errorf("audit log lacks %q: %+v", want, entries)
		}
	}
	page = send(t, c, "GET", base+"/console/audit", nil)
	if page.code != 200 || !strings.Contains(page.body, "revoke_sessions") || !strings.Contains(page.body, "operator-ann") {
		t.Errorf("audit page: %d %.500s", page.code, page.body)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// Hostile numbers, texts and names are shown as text, never as markup.
func TestConsoleEscapesHostileInput(t *testing.T) {
	m, base := consoleMain(t)
	ctx := context.Background()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	if _, err := api.StartSMS(ctx, "13700137001", client.Identity{DeviceID: "imei-h", SIMID: "sim-h"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SMS", func() bool {
		sms, _ := m.DB.RecentSMS(ctx, "+8613700137001", 1)
		return len(sms) == 1
	})
	evilName := `<b onmouseover=alert(1)>eve</b>`
	c := signIn(t, base, evilName)
	raw := []string{"<script>", "<img src=x", "<b onmouseover", `"pwned")</script>`}
	check := func(what string, a answer, wantCode int, wantEscaped string) {
		t.Helper()
		if a.code != wantCode {
			t.Errorf("%s: %d, want %d: %.300s", what, a.code, wantCode, a.body)
		}
		for _, r := range raw {
			if strings.Contains(a.body, r) {
				t.Errorf("%s: the page holds raw %q", what, r)
			}
		}
		if wantEscaped != "" && !strings.Contains(a.body, wantEscaped) {
			t.Errorf("%s: the page does not show %q escaped: %.2000s", what, wantEscaped, a.body)
		}
	}
	check("SMS text", send(t, c, "GET", base+"/console/numbers/+8613700137001", nil), 200, "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;")
	check("number in the path", send(t, c, "GET", base+"/console/numbers/"+url.PathEscape(`<script>alert("pwned")</script>`), nil), 400, "invalid_number")
	check("number in the query", send(t, c, "GET", base+"/console/number?n="+url.QueryEscape(`<img src=x onerror=alert(1)>`), nil), 400, "&lt;img src=x")
	check("number in a confirmation", send(t, c, "GET", base+"/console/numbers/"+url.PathEscape(`"><script>alert("pwned")</script>`)+"/confirm?action=block", nil), 400, "")
	check("name in the header", send(t, c, "GET", base+"/console/", nil), 200, "&lt;b onmouseover=alert(1)&gt;eve&lt;/b&gt;")
	check("name in the audit log", send(t, c, "GET", base+"/console/audit", nil), 200, "&lt;b onmouseover=alert(1)&gt;eve&lt;/b&gt;")
	check("unknown action", send(t, c, "GET", base+"/console/numbers/+8613700137001/confirm?action="+url.QueryEscape(`<script>alert("pwned")</script>`), nil), 400, "&lt;script&gt;")
	// The pages forbid inline scripts anyway.
	req, _ := http.NewRequest("GET", base+"/console/", nil)
	req.Header.Set("Authorization", "Bearer "+consoleToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

// Concurrent guessing of the token: after the first ten failures sign-ins
// are refused without comparing (429), whatever the concurrency, and the
// right token works again once the limiter refills.
func TestConsoleSignInLimitedUnderConcurrentAttack(t *testing.T) {
	_, base := consoleMain(t)
	const attackers = 60
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < attackers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a := send(t, browserish(t), "POST", base+"/console/login", url.Values{"name": {"mallory"}, "token": {"guess-" + itoa(int64(i))}})
			mu.Lock()
			codes[a.code]++
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	// Ten at once, then one a second.
	if max := 10 + int(elapsed.Seconds()) + 1; codes[http.StatusUnauthorized] > max {
		t.Fatalf("%d wrong tokens compared in %v, want at most %d: %v", codes[http.StatusUnauthorized], elapsed, max, codes)
	}
	if codes[http.StatusTooManyRequests] == 0 || codes[http.StatusUnauthorized]+codes[http.StatusTooManyRequests] != attackers {
		t.Fatalf("answers: %v", codes)
	}
	// The operator gets in once the attack stops.
	waitFor(t, "the limiter to refill", func() bool {
		a := send(t, browserish(t), "POST", base+"/console/login", url.Values{"name": {"ann"}, "token": {consoleToken}})
		return a.code == http.StatusSeeOther
	})
}

// The live stream moves with the server: logins show up in the next
// update, without reloading.
func TestConsoleLiveUpdates(t *testing.T) {
	m, base := consoleMain(t)
	req, _ := http.NewRequest("GET", base+"/console/events", nil)
	req.Header.Set("Authorization", "Bearer "+consoleToken)
	ctx := step(t, t.Context())
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	updates := make(chan map[string]string, 16)
	go func() {
		defer close(updates)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var u struct {
					Values map[string]string `json:"values"`
				}
				if json.Unmarshal([]byte(data), &u) == nil {
					updates <- u.Values
				}
			}
		}
	}()
	first := <-updates
	if first["total.logins"] != "0" || first["relay.connections"] != "0" {
		t.Fatalf("first update: %v", first)
	}
	phone(t, m, "13800138000")
	phone(t, m, "13900139000")
	for u := range updates {
		if u["total.logins"] == "2" && u["relay.connections"] == "2" {
			return
		}
	}
	t.Fatal("the stream ended before showing the logins")
}
