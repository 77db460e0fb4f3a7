package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/phonebook/phonebook/mms"
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
	p := write(t, "http:\n  addr: 127.0.0.1:9000\n  adr: x\nsmsc:\n  links:\n    - name: a\n      addr: 127.0.0.1:2775\n      pasword: s\nfoo: 1\n")
	_, err := Load(p, nil)
	if err == nil {
		t.Fatal("unknown keys accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		p + ":3: unknown key \"http.adr\"",
		p + ":8: unknown key \"smsc.links[0].pasword\"",
		p + ":9: unknown key \"foo\"",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
}

func TestInvalidValues(t *testing.T) {
	for name, body := range map[string]string{
		"driver":                     "database:\n  driver: postgres\n",
		"proxies":                    "registration:\n  header:\n    trusted_proxies: [\"not-an-ip\"]\n",
		"duration":                   "session:\n  ttl: forever\n",
		"level":                      "log:\n  level: verbose\n",
		"format":                     "log:\n  format: xml\n",
		"yaml":                       "http: [\n",
		"recycle":                    "registration:\n  recycle_after: -24h\n",
		"reauth":                     "relay:\n  reauth_interval: -1s\n",
		"mms success as not capable": "mms:\n  links:\n    - {name: a, url: \"http://127.0.0.1:1/mm7\", not_capable_codes: [2002, 1000]}\n",
		"udp rate":                   "relay:\n  udp:\n    unauth_rate: 0\n",
		"udp datagram":               "relay:\n  udp:\n    max_datagram: 100\n",
		"mms vasp_max_bytes":         "mms:\n  links:\n    - {name: a, url: \"http://127.0.0.1:1/mm7\", vasp_max_bytes: 1000}\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Load(write(t, body), nil); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// An MMSC link's own keys reach the mms package, and the ones left out
// take its defaults.
func TestMMSLinkKeys(t *testing.T) {
	c, err := Load(write(t, "mms:\n  links:\n    - {name: a, url: \"http://127.0.0.1:1/mm7\", not_capable_codes: [2002, 4004]}\n    - {name: b, url: \"https://mmsc.example/mm7\", vasp_max_bytes: 65536}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	links := c.MMSConfig().Links
	def := mms.DefaultLinkConfig()
	if len(links) != 2 || !slices.Equal(links[0].NotCapableCodes, []int{2002, 4004}) || links[0].VASPMaxBytes != def.VASPMaxBytes ||
		len(links[1].NotCapableCodes) != 0 || links[1].VASPMaxBytes != 65536 {
		t.Fatalf("links %+v", links)
	}
}

// A value of the wrong type is reported with its file, line and key, and
// says what was expected; from the environment, with the variable's name.
func TestTypeErrorsNameFileAndLine(t *testing.T) {
	p := write(t, "session:\n  ttl: forever\nlogin:\n  max_failures_per_hour: lots\nverify:\n  resend_waits: [1m, soon]\n")
	_, err := Load(p, nil)
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		p + `:2: session.ttl: "forever" is not a duration`,
		p + `:4: login.max_failures_per_hour: "lots" is not a whole number`,
		p + `:6: verify.resend_waits[1]: "soon" is not a duration`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "decoding failed") || strings.Contains(msg, "; ;") {
		t.Errorf("the decoder's wording leaks out: %q", msg)
	}

	t.Setenv("PHONEBOOK_RELAY_HEARTBEAT", "often")
	if _, err := Load("", nil); err == nil || !strings.Contains(err.Error(), `PHONEBOOK_RELAY_HEARTBEAT: relay.heartbeat: "often" is not a duration`) {
		t.Errorf("environment: %v", err)
	}
}

func TestYAMLSyntaxErrorNamesFileAndLine(t *testing.T) {
	p := write(t, "http:\n  addr: x\nlog: [\n")
	_, err := Load(p, nil)
	if err == nil || !strings.HasPrefix(err.Error(), p+":") {
		t.Fatalf("error %v does not start with %s:LINE", err, p)
	}
}

// config print writes what Load read: printed and loaded again, the
// configuration is the same, with every default as in force.
func TestPrintedConfigLoadsBack(t *testing.T) {
	t.Setenv("PHONEBOOK_RELAY_SEND_QUEUE", "99")
	c, err := Load(write(t, "verify:\n  resend_waits: [30s]\nsmsc:\n  links:\n    - {name: a, addr: \"127.0.0.1:2775\", source_ton: 5}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"max_auth_failures_per_minute: 120", "send_queue: 99", "max_text_bytes: 16384"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("printed configuration lacks %q:\n%s", want, b)
		}
	}
	os.Unsetenv("PHONEBOOK_RELAY_SEND_QUEUE")
	again, err := Load(write(t, string(b)), nil)
	if err != nil {
		t.Fatalf("printed configuration does not load: %v\n%s", err, b)
	}
	b2, err := again.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if string(b2) != string(b) {
		t.Errorf("loaded back, it prints:\n%s\nfirst printed:\n%s", b2, b)
	}
	if again.Relay.SendQueue != 99 || *again.SMSC.Links[0].SourceTON != 5 || again.Verify.ResendWaits[0] != 30*time.Second {
		t.Errorf("values lost in the round trip: %+v", again)
	}
}
