package deploy

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.yaml.in/yaml/v3"
)

// tool returns the path of an external program the test needs. Without it
// the test is skipped, except in CI, where scripts/test installs it.
func tool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not installed (scripts/test installs it from Debian's packages)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

func run(t *testing.T, dir, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool := tool(t, "promtool")
	if out, err := run(t, "prometheus", promtool, "check", "rules", "phonebook-alerts.yml"); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	// The rules' own unit tests: each alert fires on the series that should
	// raise it, and not before its `for:` has passed.
	if out, err := run(t, "prometheus", promtool, "test", "rules", "phonebook-alerts_test.yml"); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// Every alert has a runbook paragraph in docs/operations.md under its name,
// and its runbook annotation points there.
func TestAlertsHaveRunbooks(t *testing.T) {
	var f struct {
		Groups []struct {
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	b, err := os.ReadFile("prometheus/phonebook-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	ops, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			n++
			if !bytes.Contains(ops, []byte("\n#### "+r.Alert+"\n")) {
				t.Errorf("docs/operations.md has no runbook heading %q", "#### "+r.Alert)
			}
			if want := "docs/operations.md#" + strings.ToLower(r.Alert); r.Annotations["runbook"] != want {
				t.Errorf("%s: runbook annotation %q, want %q", r.Alert, r.Annotations["runbook"], want)
			}
		}
	}
	if n < 6 {
		t.Fatalf("only %d alerts", n)
	}
}

func TestDashboardIsValidJSON(t *testing.T) {
	b, err := os.ReadFile("grafana/phonebook.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Title  string `json:"title"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct{ X, Y, W, H int }
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("not valid JSON: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		t.Fatalf("uid %q title %q", d.UID, d.Title)
	}
	ids := map[int]bool{}
	graphs := 0
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.X+p.GridPos.W > 24 || p.GridPos.W <= 0 {
			t.Errorf("panel %q does not fit the 24-column grid: %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		graphs++
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			if strings.TrimSpace(q.Expr) == "" || q.RefID == "" {
				t.Errorf("panel %q: empty query or refId: %+v", p.Title, q)
			}
		}
	}
	if graphs < 10 {
		t.Fatalf("only %d panels", graphs)
	}
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildOut  []byte
	// builtCommit is the commit given to the build with -ldflags, as the
	// Dockerfile and scripts/run do ("" outside a git checkout).
	builtCommit string
)

// binary builds cmd/phonebook as the Dockerfile does: CGO off (so static),
// the commit set with -ldflags.
func binary(t *testing.T) string {
	t.Helper()
	goBin := tool(t, "go")
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "phonebook-deploy-")
		if err != nil {
			buildErr = err
			return
		}
		if out, err := exec.Command("git", "-C", "..", "rev-parse", "HEAD").Output(); err == nil {
			builtCommit = strings.TrimSpace(string(out))
		}
		binPath = filepath.Join(dir, "phonebook")
		cmd := exec.Command(goBin, "build", "-trimpath", "-ldflags", "-X main.commit="+builtCommit, "-o", binPath, "./cmd/phonebook")
		cmd.Dir = ".."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, buildOut)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// The unit passes systemd-analyze verify (with ExecStart pointing at a real
// binary), keeps its hardening, and scores as well exposed as
// `systemd-analyze security` says "OK".
func TestSystemdUnitVerifies(t *testing.T) {
	// Where available: a machine without systemd skips this, in CI too.
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	unit, err := os.ReadFile("systemd/phonebook.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nDynamicUser=yes\n", "\nProtectSystem=strict\n", "\nStateDirectory=phonebook\n",
		"\nWorkingDirectory=/var/lib/phonebook\n", "\nNoNewPrivileges=yes\n", "\nCapabilityBoundingSet=\n",
		"\nExecStart=/usr/local/bin/phonebook serve --config /etc/phonebook/phonebook.yaml\n",
	} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("unit lacks %q", strings.TrimSpace(want))
		}
	}
	bin := binary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "phonebook.service")
	os.WriteFile(path, bytes.ReplaceAll(unit, []byte("/usr/local/bin/phonebook"), []byte(bin)), 0o644)
	out, err := run(t, dir, analyze, "verify", "--man=no", path)
	// verify exits 0 on unknown keys and bad values, with a warning: any
	// output is a failure.
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// Exposure is scored 0-10 (shown) or 0-100 (threshold): above 2.0 is
	// no longer "OK".
	if out, err := run(t, dir, analyze, "security", "--offline=yes", "--threshold=20", path); err != nil {
		t.Fatalf("systemd-analyze security: exposure above 2.0: %v\n%s", err, out)
	}
}

// The configuration the unit reads is valid once the operator has named
// an SMSC: until then serve refuses it, and config check (serve's own
// validation) says so and nothing else.
func TestEtcConfigIsValid(t *testing.T) {
	out, err := run(t, ".", binary(t), "config", "check", "phonebook.yaml")
	if err == nil || !strings.Contains(out, "no smsc.links configured") {
		t.Fatalf("config check deploy/phonebook.yaml without an SMSC: %v\n%s", err, out)
	}
	t.Setenv("PHONEBOOK_SMSC_LINKS", "") // the environment must not supply one
	t.Setenv("PHONEBOOK_SMSC_SIMULATOR", "true")
	if out, err := run(t, ".", binary(t), "config", "check", "phonebook.yaml"); err != nil {
		t.Fatalf("config check deploy/phonebook.yaml: %v\n%s", err, out)
	}
}

// The binary the Dockerfile builds is static: no ELF interpreter, no
// shared libraries, so it runs on a distroless/static base.
func TestBinaryIsStatic(t *testing.T) {
	f, err := elf.Open(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("binary needs shared libraries: %v", libs)
	}
}

// `phonebook version` names the commit the binary was built from.
func TestVersionPrintsCommit(t *testing.T) {
	bin := binary(t)
	if builtCommit == "" {
		t.Skip("not a git checkout")
	}
	out, err := run(t, ".", bin, "version")
	if err != nil {
		t.Fatalf("version: %v %s", err, out)
	}
	if !strings.HasPrefix(out, "phonebook dev commit "+builtCommit+" ") {
		t.Fatalf("version printed %q, want commit %s", out, builtCommit)
	}
}

// The Dockerfile runs as a non-root user and sets only configuration keys
// that exist; so does the compose file.
func TestContainerFiles(t *testing.T) {
	df, err := os.ReadFile("docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(df, []byte("\nUSER 65532:65532\n")) || !bytes.Contains(df, []byte("CGO_ENABLED=0")) {
		t.Fatal("Dockerfile must build with CGO_ENABLED=0 and run as USER 65532:65532")
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `yaml:"environment"`
		} `yaml:"services"`
	}
	b, err := os.ReadFile("docker/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for _, s := range []string{"mariadb", "nats", "pb1", "pb2", "pb3"} {
		if _, ok := compose.Services[s]; !ok {
			t.Errorf("compose.yaml has no service %q", s)
		}
	}
	env := compose.Services["pb1"].Environment
	if env["PHONEBOOK_CLUSTER_NATS_URL"] == "" || env["PHONEBOOK_DATABASE_DRIVER"] != "mysql" || env["PHONEBOOK_NODE"] != "pb1" {
		t.Fatalf("pb1 environment: %v", env)
	}
	// `config print` with that environment shows every value: no variable
	// names a key that does not exist (viper would ignore it silently).
	cmd := exec.Command(binary(t), "config", "print")
	cmd.Env = append(os.Environ(), "PHONEBOOK_HTTP_ADDR=0.0.0.0:8080")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("config print: %v\n%s", err, out)
	}
	for k, v := range env {
		if strings.Contains(k, "DSN") || strings.Contains(k, "TOKEN") {
			continue // redacted
		}
		if !bytes.Contains(out, []byte(v)) {
			t.Errorf("%s=%s does not show in config print:\n%s", k, v, out)
		}
	}
}
