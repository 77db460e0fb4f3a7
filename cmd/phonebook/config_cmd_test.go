package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonebook/phonebook/config"
)

// runCLI runs the phonebook command line in-process.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return out.String(), err
}

// `config check` refuses exactly what serve refuses, with the same words:
// each file here is refused by both, before serve opens anything.
func TestConfigCheckIsServesValidation(t *testing.T) {
	t.Setenv("PHONEBOOK_SMSC_SIMULATOR", "true")
	long := strings.Repeat("n", 70)
	for name, tc := range map[string]struct{ body, want string }{
		"short secret":      {"verify:\n  secret_key: short\n", "secret_key must be at least 16 characters"},
		"template":          {"verify:\n  template: no code here\n", "template must contain {code}"},
		"log level":         {"log:\n  level: verbose\n", `log.level: "verbose" is not debug, info, warn or error`},
		"log format":        {"log:\n  format: xml\n", `log.format: "xml"`},
		"idle vs heartbeat": {"relay:\n  heartbeat: 30s\n  idle_timeout: 30s\n", "idle timeout 30s must be longer than the heartbeat interval 30s"},
		"fallback":          {"relay:\n  fallback: sometimes\n", `"sometimes"`},
		"tls files":         {"relay:\n  tls_cert: /nonexistent/cert.pem\n  tls_key: /nonexistent/key.pem\n", "relay: tls:"},
		"link twice": {"smsc:\n  links:\n    - {name: a, addr: \"127.0.0.1:2775\"}\n    - {name: a, addr: \"127.0.0.1:2776\"}\n",
			"smsc a: two links have this name"},
		"link prefix":  {"smsc:\n  links:\n    - {name: a, addr: \"127.0.0.1:2775\", prefixes: [\"86\"]}\n", `prefix "86"`},
		"cluster node": {"node: " + long + "\ncluster:\n  nats_url: nats://127.0.0.1:1\n", "cluster node id"},
		"visibility":   {"contacts:\n  visibility: everyone\n", `"everyone"`},
		"unknown key":  {"relay:\n  offline_after: 5m\n", `:2: unknown key "relay.offline_after"`},
		"type":         {"relay:\n  send_queue: big\n", `:2: relay.send_queue: "big" is not a whole number`},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "phonebook.yaml")
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			out, checkErr := runCLI(t, "config", "check", p)
			if checkErr == nil || !strings.Contains(checkErr.Error(), tc.want) {
				t.Fatalf("config check: %v (output %q); want an error containing %q", checkErr, out, tc.want)
			}
			// serve: the same loading, then Main.Run.
			cfg, err := config.Load(p, nil)
			if err != nil {
				if err.Error() != checkErr.Error() {
					t.Fatalf("serve's load says %q, config check %q", err, checkErr)
				}
				return
			}
			cfg.HTTP.Addr, cfg.Relay.TCPAddr, cfg.Relay.UDPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
			cfg.Database.DSN = filepath.Join(dir, "phonebook.db")
			m := NewMain(cfg, quietLogger())
			m.SimOutput = discard{}
			runErr := m.Run(context.Background())
			m.Close()
			if runErr == nil || !strings.Contains(runErr.Error(), tc.want) {
				t.Fatalf("serve started or failed otherwise: %v; want %q", runErr, tc.want)
			}
			if _, err := os.Stat(cfg.Database.DSN); !os.IsNotExist(err) {
				t.Errorf("serve opened the database before refusing its configuration (%v)", err)
			}
		})
	}
}

// The shipped example has every key at its default: no SMSC link and no
// simulator, which serve refuses; with the simulator it is fine.
func TestConfigCheckOfTheExample(t *testing.T) {
	const example = "../../config/phonebook.example.yaml"
	if _, err := runCLI(t, "config", "check", example); err == nil || !strings.Contains(err.Error(), "no smsc.links configured") {
		t.Fatalf("config check of the example without an SMSC: %v", err)
	}
	t.Setenv("PHONEBOOK_SMSC_SIMULATOR", "true")
	out, err := runCLI(t, "config", "check", example)
	if err != nil || !strings.HasSuffix(out, ": ok\n") {
		t.Fatalf("config check of the shipped example: %v %q", err, out)
	}
}

// config print shows what is in force, including the defaults the
// components would otherwise fill in silently.
func TestConfigPrintShowsEffectiveValues(t *testing.T) {
	p := filepath.Join(t.TempDir(), "phonebook.yaml")
	if err := os.WriteFile(p, []byte("smsc:\n  links:\n    - {name: a, addr: \"127.0.0.1:2775\", password: hunter2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := runCLI(t, "config", "print", "--config", p, "--http-addr", "127.0.0.1:9999")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"max_auth_failures_per_minute: 120", "send_queue: 256", "max_text_bytes: 16384",
		"tcp_addr: 127.0.0.1:5222", "addr: 127.0.0.1:9999", "window: 10", "binds: 1", "enquire_link: 30s", "password: REDACTED",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config print lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Error("config print shows a password")
	}
}

// A start that fails after the SMS side is up (here: the HTTP port is
// taken) stops what it started without logging errors that are not the
// cause, such as the outbox's "releasing the claims ... context canceled".
func TestFailedStartLogsOnlyTheCause(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testConfig(t)
	cfg.HTTP.Addr = taken.Addr().String()
	var logs lockedBuffer
	m := NewMain(cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	m.SimOutput = discard{}
	runErr := m.Run(context.Background())
	m.Close()
	if runErr == nil || !strings.Contains(runErr.Error(), "http: listen "+cfg.HTTP.Addr) {
		t.Fatalf("start: %v", runErr)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("a failed start logged errors besides its cause:\n%s", logs.String())
	}
}
