package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/config"
)

// testConfig is the embedded default on a temporary SQLite file with every
// listener on a free loopback port.
func testConfig(t *testing.T) config.Config { return testConfigTB(t) }

func testConfigTB(t testing.TB) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Relay.TCPAddr = "127.0.0.1:0"
	cfg.Relay.UDPAddr = "127.0.0.1:0"
	cfg.Database.DSN = filepath.Join(t.TempDir(), "phonebook.db")
	cfg.Media.Dir = filepath.Join(t.TempDir(), "media")
	cfg.Registration.Header.TrustedProxies = []string{"127.0.0.0/8"}
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.SMSC.Simulator = true
	cfg.SMSC.SimulatorReceiptDelay = 10 * time.Millisecond
	return cfg
}

func quietLogger() *slog.Logger {
	if os.Getenv("PHONEBOOK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func startMain(t *testing.T, cfg config.Config) *Main {
	t.Helper()
	m := NewMain(cfg, quietLogger())
	m.SimOutput = discard{}
	if err := m.Run(context.Background()); err != nil {
		m.Close()
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestAccountSurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	ctx := context.Background()
	id := client.Identity{DeviceID: "imei-1", SIMID: "sim-1"}

	m := startMain(t, cfg)
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	creds, err := api.RegisterHeader(ctx, "X-Up-Calling-Line-Id", "138 0013 8000", id)
	if err != nil || !creds.Created {
		t.Fatalf("register: %+v %v", creds, err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	m2 := startMain(t, cfg)
	api = &client.API{BaseURL: "http://" + m2.HTTPAddr()}
	sess, err := api.Login(ctx, "+8613800138000", id, creds.DeviceKey, "")
	if err != nil || sess.Token == "" {
		t.Fatalf("login after restart: %+v %v", sess, err)
	}
}

func TestConfigCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(good, []byte("http:\n  addr: 127.0.0.1:9000\nsmsc:\n  simulator: true\n"), 0o600)
	os.WriteFile(bad, []byte("http:\n  addr: 127.0.0.1:9000\ndatabase:\n  drivr: mysql\n"), 0o600)

	run := func(args ...string) (string, error) { return runCLI(t, args...) }
	if out, err := run("config", "check", good); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("good file: %q %v", out, err)
	}
	_, err := run("config", "check", bad)
	if err == nil || !strings.Contains(err.Error(), bad+":4") || !strings.Contains(err.Error(), "database.drivr") {
		t.Fatalf("bad file: %v", err)
	}
	t.Setenv("PHONEBOOK_DATABASE_DSN", "user:hunter2@tcp(db:3306)/pb")
	t.Setenv("PHONEBOOK_DATABASE_DRIVER", "mysql")
	out, err := run("config", "print")
	if err != nil || strings.Contains(out, "hunter2") || !strings.Contains(out, "REDACTED") {
		t.Fatalf("config print leaks or fails: %q %v", out, err)
	}
}

func TestAdminUserCommands(t *testing.T) {
	cfg := testConfig(t)
	m := startMain(t, cfg)
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	if _, err := api.RegisterHeader(context.Background(), "X-Up-Calling-Line-Id", "13800138000", client.Identity{DeviceID: "a", SIMID: "b"}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append(args, "--database-dsn", cfg.Database.DSN))
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run("admin", "user", "show", "138 0013 8000"); err != nil || !strings.Contains(out, `"valid": true`) {
		t.Fatalf("show: %q %v", out, err)
	}
	if out, err := run("admin", "user", "block", "13800138000"); err != nil || !strings.Contains(out, "blocked") {
		t.Fatalf("block: %q %v", out, err)
	}
	if _, err := run("admin", "user", "block", "13900139000"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("block of no one: %v", err)
	}
	if out, _ := run("admin", "user", "show", "13800138000"); !strings.Contains(out, `"valid": false`) {
		t.Fatalf("after block: %q", out)
	}
	if _, err := run("admin", "user", "show", "12"); err == nil || !strings.Contains(err.Error(), "invalid_number") {
		t.Fatalf("bad number: %v", err)
	}
	if _, err := run("admin", "user", "delete", "13800138000"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := run("admin", "user", "show", "13800138000"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("after delete: %v", err)
	}
	// Each action is in the audit log, as the console's are: who (the
	// operating-system user, from which host), what, on which number.
	entries, err := m.DB.Audit(context.Background(), "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Actor, "cli:") || e.Remote == "" {
			t.Errorf("audit entry by %q from %q", e.Actor, e.Remote)
		}
		got = append(got, e.Action+" "+e.Target+" "+e.Detail)
	}
	want := []string{ // newest first
		"delete_user +8613800138000 ",
		"block_failed +8613900139000 not_found: no user with number +8613900139000",
		"block +8613800138000 0 sessions revoked",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Only migrate and serve change the schema: the admin commands, on a
// database never migrated (or migrated by an older binary), stop and say
// what to run, and create nothing.
func TestAdminCommandsDoNotMigrate(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "pb.db")
	for _, args := range [][]string{
		{"admin", "user", "show", "13800138000"},
		{"admin", "user", "block", "13800138000"},
		{"admin", "optout", "list"},
	} {
		_, err := runCLI(t, append(args, "--database-dsn", dsn)...)
		if err == nil || !strings.Contains(err.Error(), "unavailable: the database schema is at version 0") ||
			!strings.HasSuffix(err.Error(), "run `phonebook migrate`") {
			t.Fatalf("%v on an empty database: %v", args, err)
		}
	}
	if out, err := runCLI(t, "migrate", "--database-dsn", dsn); err != nil || !strings.Contains(out, "schema at version") {
		t.Fatalf("migrate: %q %v", out, err)
	}
	if _, err := runCLI(t, "admin", "user", "show", "13800138000", "--database-dsn", dsn); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("show after migrate: %v", err)
	}
}
