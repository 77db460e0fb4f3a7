package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store"
)

// lockedBuffer is an output a running command writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runPhone runs `phonebook phone ARGS...` against m with the given state
// file and returns its output.
func runPhone(t *testing.T, ctx context.Context, m *Main, state string, out *lockedBuffer, args ...string) error {
	t.Helper()
	c := newRootCmd()
	c.SetOut(out)
	c.SetErr(out)
	c.SetArgs(append(append([]string{"phone"}, args...), "--state", state, "--server", "http://"+m.HTTPAddr(), "--relay", m.RelayAddr()))
	return c.ExecuteContext(ctx)
}

// waitOutput waits, for one step, until out holds want.
func waitOutput(t *testing.T, ctx context.Context, out *lockedBuffer, want string) {
	t.Helper()
	ctx = step(t, ctx)
	for !strings.Contains(out.String(), want) {
		select {
		case <-ctx.Done():
			t.Fatalf("output never held %q:\n%s", want, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// The tour of README.md, through the served binary: a phone book imported
// with `phone contacts import`, a contact joining, and presence set with
// `phone status` showing on the other phone's `phone listen`. The new user
// reaches the contacts service through the accounts hook.
func TestPresenceEndToEnd(t *testing.T) {
	m := startMain(t, testConfig(t))
	// No deadline for the whole test: each command and each wait has its
	// own (stepPatience), and the long-running commands end when cancelled.
	ctx := t.Context()
	dir := t.TempDir()
	aliceState, bobState, carolState := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json"), filepath.Join(dir, "carol.json")
	run := func(state string, args ...string) string {
		t.Helper()
		var out lockedBuffer
		if err := runPhone(t, step(t, ctx), m, state, &out, args...); err != nil {
			t.Fatalf("phone %v: %v\n%s", args, err, out.String())
		}
		return out.String()
	}
	run(aliceState, "register", "13600136000", "--method", "header")
	run(bobState, "register", "13500135000", "--method", "header")

	out := run(aliceState, "contacts", "import", "../../docs/examples/alice.vcf")
	for _, want := range []string{
		"Bob Li               +8613500135000   on Phonebook\n",
		"Carol Wang           +8613700137000   not on Phonebook (messages go by SMS)",
		"Mum                  +861065529988    not on Phonebook",
		`Pizza                "12345"          invalid number: `,
		"4 card(s) read: 1 on Phonebook (0 mutual), 2 not yet, 1 without a valid number; the book now holds 4 entries, 3 contacts",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("import output lacks %q:\n%s", want, out)
		}
	}

	// Alice listens; Bob imports his book (now mutual: she sees him come
	// and go), Carol registers (Alice is told she joined), Bob sets a
	// status and stays online. The long-running commands get a --wait
	// far beyond any step and are stopped by cancelling them.
	var listen lockedBuffer
	lctx, stopListen := context.WithCancel(ctx)
	listenDone := make(chan error, 1)
	go func() { listenDone <- runPhone(t, lctx, m, aliceState, &listen, "listen", "--wait", "1h") }()
	waitOutput(t, ctx, &listen, "0 contact(s) visible")

	if out := run(bobState, "contacts", "import", "../../docs/examples/bob.vcf"); !strings.Contains(out, "Alice Zhang          +8613600136000   on Phonebook, mutual, online") {
		t.Fatalf("bob's import:\n%s", out)
	}
	// Bob's import is a short visit: Alice is told he is online (the push
	// when they become mutual) and then offline. Pushes about one user may
	// be coalesced to the last state (docs/protocol.md), so on a busy
	// machine the two may arrive as "offline" only; never in the wrong
	// order. (contacts' TestNewMutualContactGetsPresence shows the push
	// itself.)
	waitOutput(t, ctx, &listen, "presence +8613500135000 offline")
	if got := listen.String(); strings.Contains(got, "presence +8613500135000 online") &&
		strings.Index(got, "presence +8613500135000 online") > strings.Index(got, "presence +8613500135000 offline") {
		t.Fatalf("alice saw bob online after he went offline:\n%s", got)
	}
	run(carolState, "register", "13700137000", "--method", "header")
	waitOutput(t, ctx, &listen, "contact joined Phonebook: +8613700137000")

	var status lockedBuffer
	sctx, stopStatus := context.WithCancel(ctx)
	statusDone := make(chan error, 1)
	go func() {
		statusDone <- runPhone(t, sctx, m, bobState, &status, "status", "--im", "busy", "--text", "in a meeting", "--activity", "in_call", "--wait", "1h")
	}()
	waitOutput(t, ctx, &status, `+8613500135000 is busy "in a meeting" (in_call); visible to mutual`)
	waitOutput(t, ctx, &listen, `presence +8613500135000 busy "in a meeting" (in_call)`)
	stopStatus()
	if err := <-statusDone; err != nil {
		t.Fatalf("status: %v\n%s", err, status.String())
	}
	// Bob's status session ended: offline, activity gone, text kept.
	waitOutput(t, ctx, &listen, `presence +8613500135000 offline "in a meeting"`)
	stopListen()
	if err := <-listenDone; err != nil {
		t.Fatalf("listen: %v", err)
	}

	out = run(aliceState, "contacts", "list")
	for _, want := range []string{
		"Bob Li [Friends] (id vcf:",
		`cell     135 0013 5000        on Phonebook, mutual, offline "in a meeting"`,
		"cell     +86 137-0013-7000    on Phonebook\n",
		"work     12345                invalid number",
		"4 entries, 3 contacts",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("list output lacks %q:\n%s", want, out)
		}
	}
}

// Over a client connection to the served binary: the login PresenceList
// and pushes, end to end.
func TestPresenceListEndToEnd(t *testing.T) {
	m := startMain(t, testConfig(t))
	ctx := t.Context()
	alice := phone(t, m, "13800138000")
	if _, err := alice.SyncContacts(step(t, ctx), &relaypb.ContactsSync{Full: true, Entries: []*relaypb.ContactEntry{
		{Id: "1", Name: "Bob", Phones: []*relaypb.ContactPhone{{Number: "139 0013 9000"}}}}}); err != nil {
		t.Fatal(err)
	}
	bob := phone(t, m, "13900139000")
	<-bob.PresenceLists() // bob is online: pushes reach him
	if _, err := bob.SyncContacts(step(t, ctx), &relaypb.ContactsSync{Added: []*relaypb.ContactEntry{
		{Id: "a", Name: "Alice", Phones: []*relaypb.ContactPhone{{Number: "+8613800138000"}}}}}); err != nil {
		t.Fatal(err)
	}
	text := "on the train"
	if _, err := alice.SetPresence(step(t, ctx), &relaypb.PresenceSet{StatusText: &text}); err != nil {
		t.Fatal(err)
	}
	wait := step(t, ctx)
	for seen := false; !seen; {
		select {
		case pc := <-bob.PresenceChanges():
			seen = pc.Presence.Number == "+8613800138000" && pc.Presence.StatusText == text
		case <-wait.Done():
			t.Fatal("bob never saw alice's status text")
		}
	}
	// Bob's next login (registering again, as phone does) starts with the list.
	bob.Close()
	again := phone(t, m, "13900139000")
	select {
	case list := <-again.PresenceLists():
		if len(list) != 1 || list[0].Number != "+8613800138000" || list[0].StatusText != text || list[0].ImStatus != "online" {
			t.Fatalf("login list %v", list)
		}
	case <-step(t, ctx).Done():
		t.Fatal("no PresenceList at login")
	}
}

// A user the store shows online with no connection (the server crashed
// while they were connected) is offline after a restart.
func TestPresenceResetAtStart(t *testing.T) {
	cfg := testConfig(t)
	m := startMain(t, cfg)
	ctx := context.Background()
	on := "online"
	if _, _, err := m.DB.UpdateStatus(ctx, "+8613800138000", store.StatusUpdate{IMStatus: &on}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m = startMain(t, cfg)
	st, err := m.DB.UserStatus(ctx, "+8613800138000")
	if err != nil || st.IMStatus != store.StatusOffline {
		t.Fatalf("after restart: %+v %v", st, err)
	}
}

// `phone chat` sets presence and lists contacts in the running session.
func TestPhoneChatPresenceCommands(t *testing.T) {
	m := startMain(t, testConfig(t))
	ctx := t.Context()
	state := filepath.Join(t.TempDir(), "alice.json")
	var out lockedBuffer
	if err := runPhone(t, step(t, ctx), m, state, &out, "register", "138 0013 8000", "--method", "header"); err != nil {
		t.Fatalf("register: %v\n%s", err, out.String())
	}
	c := newRootCmd()
	var chat lockedBuffer
	c.SetOut(&chat)
	c.SetErr(&chat)
	c.SetIn(strings.NewReader("/status on the bus\n/im sleepy\n/who\n"))
	c.SetArgs([]string{"phone", "chat", "--state", state, "--server", "http://" + m.HTTPAddr(), "--relay", m.RelayAddr()})
	// The chat ends with its input; the refused /im makes its exit status 3.
	err := c.ExecuteContext(step(t, ctx))
	if exitCode(err) != exitRefused {
		t.Fatalf("chat: %v (exit %d, want %d)\n%s", err, exitCode(err), exitRefused, chat.String())
	}
	got := chat.String()
	i, j, k := strings.Index(got, `you are online "on the bus"`), strings.Index(got, "status: relay: invalid_request:"), strings.LastIndex(got, "0 contact(s) visible")
	if i < 0 || j < i || k < j {
		t.Fatalf("commands not answered in order:\n%s", got)
	}
}

// mutualContacts puts each phone's number in the other's book.
func mutualContacts(t *testing.T, ctx context.Context, a *client.Client, aNumber string, b *client.Client, bNumber string) {
	t.Helper()
	for _, s := range []struct {
		c     *client.Client
		other string
	}{{a, bNumber}, {b, aNumber}} {
		if _, err := s.c.SyncContacts(step(t, ctx), &relaypb.ContactsSync{Full: true, Entries: []*relaypb.ContactEntry{
			{Id: "1", Name: "x", Phones: []*relaypb.ContactPhone{{Number: s.other}}}}}); err != nil {
			t.Fatal(err)
		}
	}
}

// Presence crosses nodes: Alice on node A sees Bob on node B change his
// status and go offline.
func TestPresenceAcrossNodesEndToEnd(t *testing.T) {
	a, b := twoNodes(t)
	ctx := t.Context()
	alice := phone(t, a, "13800138000")
	bob := phone(t, b, "13900139000")
	<-alice.PresenceLists() // alice is online: pushes reach her
	mutualContacts(t, ctx, alice, "13800138000", bob, "13900139000")
	// The connection table travels through NATS: set the text again until
	// node B's push finds Alice on node A.
	wait := step(t, ctx)
	for i := 0; ; i++ {
		text := fmt.Sprint("status ", i)
		if _, err := bob.SetPresence(step(t, ctx), &relaypb.PresenceSet{StatusText: &text}); err != nil {
			t.Fatal(err)
		}
		select {
		case pc := <-alice.PresenceChanges():
			if pc.Presence.Number != "+8613900139000" {
				t.Fatalf("push about %v", pc.Presence)
			}
		case <-time.After(500 * time.Millisecond):
			if wait.Err() != nil {
				t.Fatal("no presence push across nodes")
			}
			continue
		}
		break
	}
	bob.Close()
	wait = step(t, ctx)
	for {
		select {
		case pc := <-alice.PresenceChanges():
			if pc.Presence.Number == "+8613900139000" && pc.Presence.ImStatus == "offline" {
				return
			}
		case <-wait.Done():
			t.Fatal("bob's logout on node B never reached alice on node A")
		}
	}
}
