package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/config"
)

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// The operator paths answer 404 on the public listener and are served on
// the admin listener; pprof only when asked for.
func TestAdminPathsOnlyOnAdminListener(t *testing.T) {
	m := startMain(t, testConfig(t))
	public, admin := "http://"+m.HTTPAddr(), "http://"+m.AdminAddr()
	for _, p := range []string{"/metrics", "/admin/connections", "/debug/pprof/"} {
		if code, body := get(t, public+p, ""); code != http.StatusNotFound {
			t.Errorf("public %s: %d %s, want 404", p, code, body)
		}
	}
	if code, body := get(t, admin+"/metrics", ""); code != 200 || !strings.Contains(body, "phonebook_http_requests_total") {
		t.Errorf("admin /metrics: %d %.200s", code, body)
	}
	code, body := get(t, admin+"/admin/connections", "")
	var conns struct {
		Connections []json.RawMessage `json:"connections"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &conns) != nil || conns.Connections == nil {
		t.Errorf("admin /admin/connections: %d %s", code, body)
	}
	if code, _ := get(t, admin+"/debug/pprof/", ""); code != http.StatusNotFound {
		t.Errorf("pprof with admin.pprof off: %d, want 404", code)
	}
	// /readyz (public) says the SMS side is the simulator.
	if code, body := get(t, public+"/readyz", ""); code != 200 || !strings.Contains(body, `"smsc":"simulator"`) {
		t.Errorf("readyz: %d %s", code, body)
	}
}

func TestAdminToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admin.Token = "s3cret-admin-token-0123"
	cfg.Admin.Pprof = true
	m := startMain(t, cfg)
	admin := "http://" + m.AdminAddr()
	for _, p := range []string{"/metrics", "/admin/connections", "/debug/pprof/"} {
		for _, tok := range []string{"", "wrong", cfg.Admin.Token + "x", cfg.Admin.Token[:10]} {
			if code, body := get(t, admin+p, tok); code != http.StatusUnauthorized || !strings.Contains(body, `"unauthorized"`) {
				t.Errorf("%s with token %q: %d %s, want 401", p, tok, code, body)
			}
		}
		if code, body := get(t, admin+p, cfg.Admin.Token); code != 200 {
			t.Errorf("%s with the token: %d %.200s", p, code, body)
		}
	}
	// `phonebook admin connections` sends the token from the configuration.
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	t.Setenv("PHONEBOOK_ADMIN_TOKEN", cfg.Admin.Token)
	cmd.SetArgs([]string{"admin", "connections", "--admin-addr", m.AdminAddr(), "--database-dsn", cfg.Database.DSN})
	if err := cmd.Execute(); err != nil || !strings.Contains(out.String(), "NUMBER") {
		t.Fatalf("admin connections: %q %v", out.String(), err)
	}
}

func TestAdminConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		addr, token, want string
	}{
		{"0.0.0.0:8090", "", "admin.token is required"},
		{":8090", "", "admin.token is required"},
		{"10.0.0.5:8090", "", "admin.token is required"},
		{"10.0.0.5:8090", "short", "admin.token: at least 16"},
		{"127.0.0.1", "", "not host:port"},
	} {
		cfg := config.Default()
		cfg.Admin.Addr, cfg.Admin.Token = tc.addr, tc.token
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("admin.addr %q token %q: %v, want %q", tc.addr, tc.token, err, tc.want)
		}
	}
	for _, ok := range []struct{ addr, token string }{
		{"127.0.0.1:8090", ""}, {"[::1]:8090", ""}, {"localhost:8090", ""}, {"", ""}, {"0.0.0.0:8090", "0123456789abcdef"},
	} {
		cfg := config.Default()
		cfg.Admin.Addr, cfg.Admin.Token = ok.addr, ok.token
		if err := cfg.Validate(); err != nil {
			t.Errorf("admin.addr %q: %v", ok.addr, err)
		}
	}
	cfg := config.Default()
	cfg.SMSC.SimulatorAddr = "0.0.0.0:2775"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "smsc.simulator_addr") {
		t.Errorf("simulator on every interface: %v", err)
	}
}

// serve with no SMSC link refuses to start unless smsc.simulator is set,
// and says which key to set; with it (as scripts/run sets it) it serves,
// with the simulator on loopback.
func TestServeNeedsLinksOrSimulator(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns servers")
	}
	dir := t.TempDir()
	base := []string{
		"PHONEBOOK_DATABASE_DSN=" + filepath.Join(dir, "pb.db"),
		"PHONEBOOK_HTTP_ADDR=127.0.0.1:0", "PHONEBOOK_RELAY_TCP_ADDR=127.0.0.1:0",
		"PHONEBOOK_RELAY_UDP_ADDR=127.0.0.1:0", "PHONEBOOK_ADMIN_ADDR=127.0.0.1:0",
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), base...), "PHONEBOOK_TEST_EXEC=serve")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("serve without links: %v, want a non-zero exit; output %s", err, out)
	}
	if !bytes.Contains(out, []byte("smsc.simulator")) || !bytes.Contains(out, []byte("smsc.links")) {
		t.Fatalf("the refusal does not name the keys: %s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "pb.db")); err == nil {
		t.Errorf("the refused server created its database")
	}

	cmd = exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), base...), "PHONEBOOK_TEST_EXEC=serve", "PHONEBOOK_SMSC_SIMULATOR=true")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var simAddr bool
	deadline := time.After(30 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the server exited")
			}
			if strings.Contains(l, "smsc.simulator") && strings.Contains(l, "addr=127.0.0.1:") {
				simAddr = true
			}
			if strings.Contains(l, `msg="phonebook serving"`) {
				if !strings.Contains(l, "smsc=simulator") || !simAddr {
					t.Fatalf("startup log does not say simulator on loopback: %s", l)
				}
				return
			}
		case <-deadline:
			t.Fatal("the server did not start")
		}
	}
}
