package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/mm7"
	"github.com/phonebook/phonebook/mm7/mmscsim"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// sendMedia uploads body and sends it with caption to number; it returns
// the server's message id once the relay answered.
func sendMedia(t *testing.T, p *mediaPhone, number, caption string, body []byte) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), stepPatience) // generous: only matters when failing
	defer cancel()
	up, err := p.api.UploadMedia(ctx, p.token, "beach.jpg", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	pend, err := p.SendMsg(&relaypb.Send{ClientMsgId: p.NewClientMsgID(), To: number, Text: caption, Media: []*relaypb.MediaRef{{Id: up.ID}}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := pend.Wait(ctx)
	if err != nil || res.State != relaypb.MessageState_STORED {
		t.Fatalf("send: %v %v", res, err)
	}
	return res.ServerMsgId
}

// waitReceipts reads p's receipts for id until it has seen want, in order.
func waitReceipts(t *testing.T, p *mediaPhone, id string, want ...relaypb.MessageState) {
	t.Helper()
	var got []relaypb.MessageState
	deadline := time.After(60 * time.Second)
	for len(got) < len(want) {
		select {
		case r := <-p.Receipts():
			if r.ServerMsgId != id {
				continue
			}
			got = append(got, r.State)
			if r.State != want[len(got)-1] {
				t.Fatalf("receipts %v (last: %v), want %v", got, r.Error, want)
			}
		case <-deadline:
			t.Fatalf("receipts %v, want %v", got, want)
		}
	}
}

// Offline and MMS-capable (the handset said so at login): the photo goes
// as an MMS with the photo, the caption and a SMIL showing both; the
// MMSC's delivery report becomes the sender's receipt.
func TestMMSToOfflineCapablePhone(t *testing.T) {
	cfg := testConfig(t)
	cfg.Relay.Fallback = "offline"
	cfg.Relay.FallbackAfter = time.Second
	m := startMain(t, cfg)
	alice := mediaPhoneAt(t, m, "13800138000")
	registerAndReport(t, m, "13900139000", true)
	photo := e2eJPEG(t, 320, 240)
	id := sendMedia(t, alice, "13900139000", "at the beach", photo)
	waitReceipts(t, alice, id, relaypb.MessageState_MMS_QUEUED, relaypb.MessageState_MMS_SUBMITTED, relaypb.MessageState_MMS_DELIVERED)

	subs := m.MMSSim.Submissions()
	if len(subs) != 1 || len(subs[0].To) != 1 || subs[0].To[0] != "+8613900139000" || subs[0].Sender != cfg.Verify.ShortNumber {
		t.Fatalf("MMSC got %+v", subs)
	}
	s := subs[0]
	if len(s.Parts) != 2 || !strings.HasPrefix(s.Parts[0].ContentType, "image/jpeg") || !bytes.Equal(s.Parts[0].Data, photo) ||
		!strings.HasPrefix(s.Parts[1].ContentType, "text/plain") || !strings.Contains(string(s.Parts[1].Data), "at the beach") ||
		!strings.Contains(string(s.Parts[1].Data), "+8613800138000") {
		t.Fatalf("parts %+v", s.Parts)
	}
	if !strings.Contains(s.SMIL, `<img src="`+s.Parts[0].ContentLocation+`" region="Image"`) || !strings.Contains(s.SMIL, `src="caption.txt" region="Text"`) {
		t.Fatalf("SMIL:\n%s", s.SMIL)
	}
	if len(m.Sim.Submits()) != 0 {
		t.Fatalf("an SMS went too: %+v", m.Sim.Submits())
	}
}

// registerAndReport registers number and logs in over HTTP with its
// handset's MMS capability report; the phone stays off the relay.
func registerAndReport(t *testing.T, m *Main, number string, capable bool) {
	t.Helper()
	ctx := context.Background()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	id := client.Identity{DeviceID: "imei-" + number, SIMID: "sim-" + number}
	creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", number, id)
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"number":%q,"device_id":%q,"sim_id":%q,"device_key":%q,"mms_capable":%v}`, number, id.DeviceID, id.SIMID, creds.DeviceKey, capable)
	res, err := http.Post("http://"+m.HTTPAddr()+"/v1/login", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("login with mms_capable: HTTP %d", res.StatusCode)
	}
}

var linkRE = regexp.MustCompile(`https?://\S+/m/([a-z0-9]+)`)

// Not MMS-capable (no source says so): the photo goes as an SMS with the
// caption and a link that downloads it, until the link expires.
func TestMediaToPhoneWithoutMMSGoesAsSMSLink(t *testing.T) {
	cfg := testConfig(t)
	cfg.Media.LinkTTL = 3 * time.Second
	m := startMain(t, cfg)
	alice := mediaPhoneAt(t, m, "13800138000")
	photo := e2eJPEG(t, 200, 100)
	id := sendMedia(t, alice, "13700137000", "at the beach", photo) // no account, no MMS
	waitReceipts(t, alice, id, relaypb.MessageState_SMS_QUEUED, relaypb.MessageState_SMS_SUBMITTED)
	var sms smscsim.Submit
	poll.Until(t, "the SMS with the link", func() bool {
		for _, s := range m.Sim.Submits() {
			if strings.HasSuffix(s.Dest, "8613700137000") {
				sms = s
				return true
			}
		}
		return false
	})
	match := linkRE.FindStringSubmatch(sms.Text)
	if match == nil || !strings.Contains(sms.Text, "at the beach") {
		t.Fatalf("SMS text %q", sms.Text)
	}
	if n := len(m.MMSSim.Submissions()); n != 0 {
		t.Fatalf("%d MMS went too", n)
	}
	get := func(path string) (int, []byte) {
		res, err := http.Get("http://" + m.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	if st, page := get("/m/" + match[1]); st != 200 || !strings.Contains(string(page), "/m/"+match[1]+"/0") {
		t.Fatalf("download page: %d %s", st, page)
	}
	if st, body := get("/m/" + match[1] + "/0"); st != 200 || !bytes.Equal(body, photo) {
		t.Fatalf("download: %d, %d bytes", st, len(body))
	}
	poll.Until(t, "the link to expire", func() bool {
		st, _ := get("/m/" + match[1] + "/0")
		return st == http.StatusGone || st == http.StatusNotFound
	})
}

// A phone without the app answers with an MMS to the short number: it
// reaches the IM user who wrote to it, with the media.
func TestMOMMSReachesTheIMUser(t *testing.T) {
	cfg := testConfig(t)
	m := startMain(t, cfg)
	alice := mediaPhoneAt(t, m, "13800138000")
	id := sendMedia(t, alice, "13700137000", "hello Carol", e2eJPEG(t, 64, 64)) // opens the conversation
	waitReceipts(t, alice, id, relaypb.MessageState_SMS_QUEUED)
	reply := e2eJPEG(t, 48, 48)
	ctx, cancel := context.WithTimeout(t.Context(), stepPatience) // generous: only matters when failing
	defer cancel()
	mo := mmscsim.MO{TransactionID: "carol-1", From: "+8613700137000", To: cfg.Verify.ShortNumber, Text: "here is mine",
		Media: []mm7.Part{{ContentType: "image/jpeg", ContentLocation: "carol.jpg", Data: reply}}}
	if err := m.MMSSim.InjectMO(ctx, mo); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-alice.Deliveries():
		if d.From != "+8613700137000" || d.Text != "here is mine" || d.Type != relaypb.MessageType_MMS || len(d.Media) != 1 ||
			d.Media[0].ContentType != "image/jpeg" || d.Media[0].Name != "carol.jpg" {
			t.Fatalf("deliver %v", d)
		}
		var got bytes.Buffer
		if _, _, err := alice.api.DownloadMedia(ctx, alice.token, d.Media[0].Id, false, 0, &got); err != nil || !bytes.Equal(got.Bytes(), reply) {
			t.Fatalf("download the MMS's photo: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the MO MMS did not reach Alice")
	}
	// The MMSC lost our answer and sends it again, same TransactionID, at
	// once and then later: Alice gets neither repeat. The next she gets
	// is Carol's next MMS.
	for range 2 {
		if err := m.MMSSim.InjectMO(ctx, mo); err != nil {
			t.Fatalf("the repeat: %v", err)
		}
	}
	next := mmscsim.MO{TransactionID: "carol-2", From: "+8613700137000", To: cfg.Verify.ShortNumber, Text: "and another"}
	if err := m.MMSSim.InjectMO(ctx, next); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-alice.Deliveries():
		if d.Text != "and another" {
			t.Fatalf("after the MMSC repeated an MMS Alice got %q, want Carol's next one", d.Text)
		}
	case <-ctx.Done():
		t.Fatal("Carol's next MMS did not reach Alice")
	}
}

// The server is SIGKILLed while 200 MMS wait in the outbox (the MMSC is
// down); after a restart, with the MMSC up, every one is sent, none twice.
func TestMMSOutboxSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns servers")
	}
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mmscAddr := l.Addr().String()
	l.Close()
	cfgPath := filepath.Join(dir, "phonebook.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`
http: {addr: "127.0.0.1:0"}
relay: {tcp_addr: "127.0.0.1:0", udp_addr: "", fallback_per_hour: 10000, max_msgs_per_second: 10000}
admin: {addr: "127.0.0.1:0"}
database: {dsn: %q}
registration: {header: {trusted_proxies: ["127.0.0.0/8"]}}
smsc: {simulator: true}
media: {dir: %q}
mms:
  capable_prefixes: ["+86"]
  retry_base: 200ms
  links:
    - {name: a, url: "http://%s/mm7", timeout: 5s}
`, filepath.Join(dir, "pb.db"), filepath.Join(dir, "media"), mmscAddr)), 0o600)

	const n = 200
	ctx, cancel := context.WithTimeout(t.Context(), 2*stepPatience) // generous: only matters when failing
	defer cancel()
	srv := startChild(t, cfgPath)
	api := &client.API{BaseURL: "http://" + srv.http}
	id := client.Identity{DeviceID: "imei-a", SIMID: "sim-a"}
	creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", "13800138000", id)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := api.Login(ctx, "13800138000", id, creds.DeviceKey, "")
	if err != nil {
		t.Fatal(err)
	}
	up, err := api.UploadMedia(ctx, sess.Token, "beach.jpg", bytes.NewReader(e2eJPEG(t, 64, 48)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.Dial(ctx, srv.relay, client.Options{Token: sess.Token, DeviceID: id.DeviceID, AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	queued := map[string]bool{}
	for i := 0; i < n; i++ {
		pend, err := c.SendMsg(&relaypb.Send{ClientMsgId: c.NewClientMsgID(), To: fmt.Sprintf("+86137%08d", i), Text: "hi", Media: []*relaypb.MediaRef{{Id: up.ID}}})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := pend.Wait(ctx); err != nil || res.State != relaypb.MessageState_STORED {
			t.Fatalf("send %d: %v %v", i, res, err)
		}
	}
	for len(queued) < n {
		select {
		case r := <-c.Receipts():
			if r.State != relaypb.MessageState_MMS_QUEUED {
				t.Fatalf("receipt %v", r)
			}
			queued[r.ServerMsgId] = true
		case <-ctx.Done():
			t.Fatalf("%d of %d MMS queued", len(queued), n)
		}
	}
	srv.kill()

	sim := mmscsim.New(mmscsim.Config{})
	if err := sim.Start(mmscAddr); err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	startChild(t, cfgPath)
	if _, err := sim.WaitSubmissions(ctx, n); err != nil {
		t.Fatalf("after restart only %d of %d MMS reached the MMSC: %v", len(sim.Submissions()), n, err)
	}
	// Give a duplicate every chance to show up before counting.
	time.Sleep(time.Second)
	seen := map[string]int{}
	for _, s := range sim.Submissions() {
		seen[s.To[0]]++
	}
	if len(seen) != n || sim.Stats().Submits != n {
		t.Fatalf("%d distinct recipients, %d submits; want %d each", len(seen), sim.Stats().Submits, n)
	}
}

// `phonebook admin mms-capable` provisions numbers in the store the
// server decides from; the admin endpoint shows the same verdict.
func TestAdminMMSCapableCommands(t *testing.T) {
	cfg := testConfig(t)
	m := startMain(t, cfg)
	dsn := []string{"--database-dsn", cfg.Database.DSN}
	run := func(args ...string) (string, error) {
		t.Helper()
		return runCLI(t, append(append([]string{"admin", "mms-capable"}, args...), dsn...)...)
	}
	if out, err := run("set", "138 0013 8000", "yes"); err != nil || !strings.Contains(out, `"capable": true`) || !strings.Contains(out, `"source": "operator"`) {
		t.Fatalf("set: %v\n%s", err, out)
	}
	list := filepath.Join(t.TempDir(), "list.csv")
	os.WriteFile(list, []byte("# from the HLR export\n13900139000,yes\n13700137000,no\n"), 0o600)
	if out, err := run("import", list); err != nil || !strings.Contains(out, "2 numbers provisioned: 1 MMS-capable, 1 not") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	os.WriteFile(list, []byte("13900139000,maybe\n"), 0o600)
	if _, err := run("import", list); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad list: %v", err)
	}
	res, err := http.Get("http://" + m.AdminAddr() + "/admin/mms-capable/13700137000")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), `"capable":false`) {
		t.Fatalf("admin endpoint: %d %s", res.StatusCode, b)
	}
	if out, err := run("clear", "13700137000"); err != nil || !strings.Contains(out, `"source": "none"`) {
		t.Fatalf("clear: %v\n%s", err, out)
	}
	if _, err := run("clear", "13700137000"); err == nil {
		t.Fatal("clearing nothing succeeded")
	}
}
