package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "phonebook.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestNoConfigIsTheEmbeddedDefault(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.Driver != "sqlite" || c.HTTP.Addr != "127.0.0.1:8080" || c.Verify.CodeTTL != 10*time.Minute {
		t.Fatalf("defaults not applied: %+v", c)
	}
}

func TestFileThenEnvThenFlags(t *testing.T) {
	p := write(t, "http:\n  addr: 127.0.0.1:9000\ndatabase:\n  driver: mysql\n  dsn: u:p@tcp(db:3306)/pb\nphone:\n  default_region: US\n")
	t.Setenv("PHONEBOOK_HTTP_ADDR", "127.0.0.1:9100")
	t.Setenv("PHONEBOOK_REGISTRATION_HEADER_TRUSTED_PROXIES", "127.0.0.0/8,10.1.2.3")
	t.Setenv("PHONEBOOK_SESSION_TTL", "2h")
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	fs.String("database-dsn", "", "")
	if err := fs.Parse([]string{"--database-dsn", "v:w@tcp(other:3306)/pb"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p, fs)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTP.Addr != "127.0.0.1:9100" {
		t.Errorf("env did not override file: %s", c.HTTP.Addr)
	}
	if c.Database.DSN != "v:w@tcp(other:3306)/pb" || c.Database.Driver != "mysql" {
		t.Errorf("flag did not override: %+v", c.Database)
	}
	if c.Phone.DefaultRegion != "US" || c.Session.TTL != 2*time.Hour {
		t.Errorf("file/env values lost: %+v %v", c.Phone, c.Session.TTL)
	}
	px, err := c.TrustedProxies()
	if err != nil || len(px) != 2 || px[1].String() != "10.1.2.3/32" {
		t.Errorf("trusted proxies = %v, %v", px, err)
	}
	if r := c.Redacted(); strings.Contains(r.Database.DSN, ":w@") {
		t.Errorf("redacted DSN still holds the password: %s", r.Database.DSN)
	}
}

func TestUnknownKeysNameFileAndLine(t *testing.T) {
	p := write(t, "http:\n  addr: 127.0.0.1:9000\n  adr: x\nsmsc:\n  links:\n    - name: a\n      addr: 127.0.0.1:2775\n      pasword: s\n")
	_, err := Load(p, nil)
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	msg := err.Error()
	for _, want := range []string{p + ":3: unknown key \"http.adr\"", "pasword"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
}

func TestInvalidValues(t *testing.T) {
	for name, body := range map[string]string{
		"driver":   "database:\n  driver: postgres\n",
		"proxies":  "registration:\n  header:\n    trusted_proxies: [\"not-an-ip\"]\n",
		"duration": "session:\n  ttl: forever\n",
		"template": "verify:\n  template: no code here\n",
		"yaml":     "http: [\n",
		"recycle":  "registration:\n  recycle_after: -24h\n",
		"reauth":   "relay:\n  reauth_interval: -1s\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Load(write(t, body), nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
