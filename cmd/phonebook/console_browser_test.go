package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
)

// chromium returns Debian's Chromium; the browser test is skipped without
// it, except in CI (scripts/test installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (scripts/test installs it from Debian's packages)")
	}
	t.Skip("chromium is not installed")
	return ""
}

// screenshotDir is where the browser test saves its screenshots: docs/
// with PHONEBOOK_UPDATE_SCREENSHOTS=1 (the ones docs/operations.md shows),
// a temporary directory otherwise.
func screenshotDir(t *testing.T) string {
	if os.Getenv("PHONEBOOK_UPDATE_SCREENSHOTS") != "" {
		return filepath.Join("..", "..", "docs")
	}
	return t.TempDir()
}

// The console in a real browser: sign in, watch the overview's live
// counters move while phones log in and chat, block and unblock a number
// and resend a failed SMS through the confirmation pages, on a desktop and
// a phone-sized screen.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	m, base := consoleMain(t)
	shots := screenshotDir(t)
	ctx := context.Background()
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}

	// Something to show: a user connected to the relay, and an SMS that
	// the SMSC refused.
	phone(t, m, "13800138000")
	if _, err := api.StartSMS(ctx, "13700137000", client.Identity{DeviceID: "imei-c", SIMID: "sim-c"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the SMS to fail", func() bool {
		sms, _ := m.DB.RecentSMS(ctx, "+8613700137000", 1)
		return len(sms) == 1 && sms[0].State == "failed"
	})

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox, // tests run as root in CI
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	browser, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first call starts the browser; its context must not time out
	// (that would stop the browser), the later ones do.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	bctx, cancel := context.WithTimeout(browser, 2*time.Minute)
	defer cancel()

	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(shots, "console-"+name+".png"), png, 0o644)
		})
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return strings.TrimSpace(s)
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// Sign in: the console answers 401 with the form.
	err := chromedp.Do(bctx,
		chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(css(`input[name="token"]`)),
		shot("login"),
		chromedp.SendKeys(css(`input[name="name"]`), "Ann Operator"),
		chromedp.SendKeys(css(`input[name="token"]`), consoleToken),
		chromedp.Click(css(`button[type="submit"]`)),
		chromedp.WaitVisible(css(`[data-live="total.logins"]`)),
	)
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	if title, _ := chromedp.Run(bctx, chromedp.Title()); !strings.Contains(title, "Phonebook console") {
		t.Errorf("login page title %q", title)
	}
	if got := text(`[data-live="link.sim-a.state"]`); !strings.HasPrefix(got, "bound since") {
		t.Errorf("link state %q", got)
	}
	// A load while the page is open: phones log in, and one chats.
	sender := phone(t, m, "13900139000")
	before := text(`[data-live="total.logins"]`)
	relayBefore := text(`[data-live="total.relay"]`)
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // no t.Fatal off the test's goroutine: errors just end the load
		defer wg.Done()
		for i := 0; i < 200 && loadCtx.Err() == nil; i++ {
			if i%10 == 0 {
				id := client.Identity{DeviceID: fmt.Sprintf("imei-load-%d", i), SIMID: fmt.Sprintf("sim-load-%d", i)}
				number := fmt.Sprintf("1360013%04d", i)
				if creds, err := api.RegisterHeader(loadCtx, "X-Up-Calling-Line-Id", number, id); err == nil {
					api.Login(loadCtx, number, id, creds.DeviceKey, "")
				}
			}
			if p, err := sender.Send("13800138000", fmt.Sprintf("load %d", i)); err == nil {
				p.Wait(loadCtx)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	err = chromedp.Do(bctx,
		chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector('[data-live="total.logins"]').textContent.trim() !== %q &&
			document.querySelector('[data-live="total.relay"]').textContent.trim() !== %q &&
			document.getElementById("live-status").textContent === "live"`, before, relayBefore),
			chromedp.WithPollingTimeout(30*time.Second)),
		shot("overview"),
	)
	stopLoad()
	wg.Wait()
	if err != nil {
		t.Fatalf("the live counters did not move (logins %s, relay %s): %v", before, relayBefore, err)
	}

	// Block and unblock through the confirmation page.
	n := phonebook.MSISDN("+8613800138000")
	err = chromedp.Do(bctx,
		chromedp.Navigate(base+"/console/numbers/"+string(n)),
		chromedp.WaitVisible(css(`#action-block`)),
		chromedp.Click(css(`#action-block`)),
		chromedp.WaitVisible(css(`#confirm`)),
		shot("confirm"),
		chromedp.Click(css(`#confirm`)),
		chromedp.WaitVisible(css(`#done`)),
	)
	if err != nil {
		t.Fatalf("block: %v", err)
	}
	if got := text(`#account-state`); got != "blocked" {
		t.Fatalf("after block the page says %q", got)
	}
	if u, err := m.DB.User(ctx, n); err != nil || u.Valid {
		t.Fatalf("after block: %+v %v", u, err)
	}
	err = chromedp.Do(bctx,
		chromedp.Click(css(`#action-unblock`)),
		chromedp.WaitVisible(css(`#confirm`)),
		chromedp.Click(css(`#confirm`)),
		chromedp.WaitVisible(css(`#done`)),
	)
	if err != nil {
		t.Fatalf("unblock: %v", err)
	}
	if got := text(`#account-state`); got != "active" {
		t.Fatalf("after unblock the page says %q", got)
	}

	// Resend the failed SMS.
	err = chromedp.Do(bctx,
		chromedp.Navigate(base+"/console/numbers/+8613700137000"),
		chromedp.WaitVisible(css(`[id^="resend-"]`)),
		chromedp.Click(css(`[id^="resend-"]`)),
		chromedp.WaitVisible(css(`#confirm`)),
		chromedp.Click(css(`#confirm`)),
		chromedp.WaitVisible(css(`#done`)),
	)
	if err != nil {
		t.Fatalf("resend: %v", err)
	}
	if sms, err := m.DB.RecentSMS(ctx, "+8613700137000", 5); err != nil || len(sms) != 2 {
		t.Fatalf("after resend: %d SMS, %v", len(sms), err)
	}
	// The resent SMS fails too (the SMSC refuses the number): its state
	// changes on the page without a reload.
	err = chromedp.Do(bctx,
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll('[data-live^="sms."]')].filter(e => e.textContent === "failed").length === 2`,
			chromedp.WithPollingTimeout(20*time.Second)),
		shot("number"),
	)
	if err != nil {
		t.Fatalf("live SMS state: %v", err)
	}

	// The audit log, and the overview on a phone's screen.
	err = chromedp.Do(bctx,
		chromedp.Navigate(base+"/console/audit"),
		chromedp.WaitVisible(css(`table`)),
		shot("audit"),
	)
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	audit := text("main")
	for _, want := range []string{"Ann Operator", "block", "unblock", "resend_sms", "sign_in"} {
		if !strings.Contains(audit, want) {
			t.Errorf("the audit page lacks %q: %s", want, audit)
		}
	}
	err = chromedp.Do(bctx,
		chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)),
		chromedp.Navigate(base+"/console/"),
		chromedp.WaitVisible(css(`[data-live="total.logins"]`)),
		shot("mobile"),
	)
	if err != nil {
		t.Fatalf("mobile: %v", err)
	}
	overflow, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`))
	if err != nil {
		t.Fatal(err)
	}
	if overflow {
		t.Error("the overview is wider than a phone's screen")
	}
}
