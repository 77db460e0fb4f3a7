package client_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

// The client is for handset tools and load generators: it must build from
// protobuf and the wire format alone. These are the only packages of this
// module it may depend on; relay/wire and relay/rudp are the framing and
// datagram format the relay shares with it, importing no server code.
var clientModulePackages = map[string]bool{
	"github.com/phonebook/phonebook":               true,
	"github.com/phonebook/phonebook/client":        true,
	"github.com/phonebook/phonebook/proto/relaypb": true,
	"github.com/phonebook/phonebook/relay/rudp":    true,
	"github.com/phonebook/phonebook/relay/wire":    true,
}

// Dependencies a client must never pull in, named so the failure says why.
var serverOnlyDeps = []string{
	"modernc.org/sqlite",
	"github.com/go-sql-driver/mysql",
	"github.com/prometheus/",
	"github.com/nats-io/",
	"github.com/spf13/viper",
}

func TestClientDependsOnNoServerCode(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "-json=ImportPath,Standard,Module", "github.com/phonebook/phonebook/client").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath string
		Standard   bool
		Module     *struct{ Path string }
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var sawClient bool
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		sawClient = sawClient || p.ImportPath == "github.com/phonebook/phonebook/client"
		if p.Standard {
			continue
		}
		if p.Module != nil && p.Module.Path == "github.com/phonebook/phonebook" {
			if !clientModulePackages[p.ImportPath] {
				t.Errorf("client depends on %s, a package of this module outside the wire format; move what it needs into relay/wire or relay/rudp", p.ImportPath)
			}
			continue
		}
		for _, bad := range serverOnlyDeps {
			if strings.HasPrefix(p.ImportPath, bad) {
				t.Errorf("client depends on %s (server-only dependency %s)", p.ImportPath, bad)
			}
		}
	}
	if !sawClient {
		t.Fatal("go list did not list the client package itself")
	}
}
