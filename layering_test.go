package phonebook_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/phonebook/phonebook"

// layeringRules are the import rules docs/architecture.md states ("Who may
// import whom"). Each names a dependency and the only packages that may
// import it directly; a package path ending in "/..." covers its subtree.
var layeringRules = []struct {
	dep     string   // import path prefix
	only    []string // packages allowed to import it
	because string
}{
	{"github.com/spf13/viper", []string{"config"}, "configuration flows in as plain values"},
	{"modernc.org/sqlite", []string{"store/..."}, "only the store talks SQL"},
	{"github.com/go-sql-driver/mysql", []string{"store/...", "smsc/outboxbench"}, "only the store talks SQL (the outbox benchmark parses DSNs)"},
	{"github.com/nats-io/", []string{"cluster/...", "cmd/phonebook"}, "only the cluster speaks NATS"},
	{module + "/config", []string{"cmd/phonebook"}, "main reads config and wires; packages take plain values"},
	{module + "/smsc", []string{"smsc/...", "smsreply", "console", "config", "cmd/phonebook"}, "the relay reaches SMS only through interfaces wired in main"},
	{module + "/media", []string{"api", "cluster", "config", "mms", "cmd/phonebook"}, "the relay reaches media only through relay.Media, wired in main"},
	{module + "/relay", []string{"relay/...", "cluster", "console", "config", "cmd/phonebook"}, "the client and the SMS side stay free of the relay server"},
	{module + "/mm7", []string{"mm7/...", "mms/...", "config", "cmd/phonebook"}, "the MMSC is reached through the MMS outbox, wired in main"},
}

// standalonePackages import nothing of this module but these (any outside
// library may be used): protocol packages that know no store, relay or
// server, so the simulator and the outbox both build on them.
var standalonePackages = map[string][]string{
	"mm7":         {},
	"mm7/mmscsim": {"mm7", "internal/simctl"},
}

// leafPackages import nothing of this module but these, and nothing outside
// the standard library but protobuf (and the domain package's own
// phone-number library): both the server and the Go client build on them.
var leafPackages = map[string][]string{
	"":                {},
	"proto/relaypb":   {},
	"proto/clusterpb": {},
	"relay/wire":      {"", "proto/relaypb"},
	"relay/rudp":      {"proto/relaypb"},
}

// covers reports whether rel (a package path relative to the module) is
// one of patterns.
func covers(patterns []string, rel string) bool {
	for _, p := range patterns {
		if tree, ok := strings.CutSuffix(p, "/..."); ok && (rel == tree || strings.HasPrefix(rel, tree+"/")) || p == rel {
			return true
		}
	}
	return false
}

// importsDep reports whether import path imp is dep: a package of this
// module exactly (relay/wire is not relay), an external module with its
// subpackages, or any path under a dep ending in "/".
func importsDep(imp, dep string) bool {
	switch {
	case strings.HasPrefix(dep, module):
		return imp == dep
	case strings.HasSuffix(dep, "/"):
		return strings.HasPrefix(imp, dep)
	default:
		return imp == dep || strings.HasPrefix(imp, dep+"/")
	}
}

func TestLayering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports", module+"/...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		seen[rel] = true
		for _, imp := range p.Imports {
			for _, r := range layeringRules {
				if importsDep(imp, r.dep) && !covers(r.only, rel) {
					t.Errorf("%s imports %s; only %v may (%s)", p.ImportPath, imp, r.only, r.because)
				}
			}
			if allowed, ok := standalonePackages[rel]; ok {
				if irel, internal := strings.CutPrefix(imp, module); internal && !covers(allowed, strings.TrimPrefix(irel, "/")) {
					t.Errorf("%s imports %s; it may import only %v of this module", p.ImportPath, imp, allowed)
				}
			}
			if allowed, ok := leafPackages[rel]; ok {
				irel, internal := strings.CutPrefix(imp, module)
				irel = strings.TrimPrefix(irel, "/")
				switch {
				case internal && !covers(allowed, irel):
					t.Errorf("%s imports %s; a leaf package may import only %v of this module", p.ImportPath, imp, allowed)
				case !internal && strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") &&
					!strings.HasPrefix(imp, "google.golang.org/protobuf/") && !(rel == "" && strings.HasPrefix(imp, "github.com/nyaruka/phonenumbers")):
					t.Errorf("%s imports %s; a leaf package may import only the standard library and protobuf", p.ImportPath, imp)
				}
			}
		}
	}
	for _, want := range []string{"", "config", "store", "relay", "relay/wire", "client", "cmd/phonebook", "mm7", "mm7/mmscsim"} {
		if !seen[want] {
			t.Errorf("go list did not list %s/%s; the rules above check nothing for it", module, want)
		}
	}
}
