package clustertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NATS is a nats-server subprocess with JetStream on a fixed port, so that
// it can be killed and started again where the nodes expect it.
type NATS struct {
	t    testing.TB
	Port int
	Dir  string // JetStream store; set a new one before Start to lose it
	conf string
	cmd  *exec.Cmd
}

// Binary finds nats-server: $PHONEBOOK_TEST_NATS_SERVER, the usual places,
// then $PATH. The test is skipped without one.
func Binary(t testing.TB) string {
	if p := os.Getenv("PHONEBOOK_TEST_NATS_SERVER"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/local/bin/nats-server", "/usr/bin/nats-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("nats-server")
	if err != nil {
		t.Skip("nats-server not installed (set PHONEBOOK_TEST_NATS_SERVER)")
	}
	return p
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartNATS starts one nats-server with JetStream; it is killed when the
// test ends.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	n := NewNATS(t)
	n.Start()
	return n
}

// StartNATSWith starts one nats-server with JetStream and conf added to
// its configuration file (authorization, TLS ...).
func StartNATSWith(t testing.TB, conf string) *NATS {
	t.Helper()
	n := NewNATS(t)
	n.conf = filepath.Join(n.Dir, "nats.conf")
	body := fmt.Sprintf("listen: 127.0.0.1:%d\njetstream { store_dir: %q }\n%s\n", n.Port, filepath.Join(n.Dir, "js"), conf)
	if err := os.WriteFile(n.conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	n.Start()
	return n
}

// NewNATS is StartNATS without the start: its port is chosen, so that a
// test can point nodes at a server that is not up yet.
func NewNATS(t testing.TB) *NATS {
	t.Helper()
	n := &NATS{t: t, Port: FreePort(t), Dir: t.TempDir()}
	t.Cleanup(n.Kill)
	return n
}

// StartNATSCluster starts size nats-servers with JetStream, joined by
// routes on loopback into one NATS cluster (JetStream needs three for
// replicated streams to survive the loss of one).
func StartNATSCluster(t testing.TB, size int) []*NATS {
	t.Helper()
	ports, routes := make([]int, size), make([]string, size)
	for i := range size {
		ports[i] = FreePort(t)
		routes[i] = "nats-route://127.0.0.1:" + strconv.Itoa(FreePort(t))
	}
	servers := make([]*NATS, size)
	for i := range size {
		dir := t.TempDir()
		conf := filepath.Join(dir, "nats.conf")
		body := fmt.Sprintf(`server_name: pbtest%d
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: pbtest
  listen: %s
  routes: [%s]
}
`, i, ports[i], filepath.Join(dir, "js"), strings.TrimPrefix(routes[i], "nats-route://"), strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		servers[i] = &NATS{t: t, Port: ports[i], Dir: dir, conf: conf}
		servers[i].Start()
		t.Cleanup(servers[i].Kill)
	}
	return servers
}

// URL is the server's client URL.
func (n *NATS) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.Port) }

// Start starts the server (again) and waits until it listens.
func (n *NATS) Start() {
	t := n.t
	t.Helper()
	args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(n.Port), "-js", "-sd", n.Dir}
	if n.conf != "" {
		args = []string{"-c", n.conf}
	}
	cmd := exec.Command(Binary(t), args...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nats-server: %v", err)
	}
	n.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(n.Port), 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nats-server on port %d did not listen: %v", n.Port, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Kill stops the server as a crash would (SIGKILL).
func (n *NATS) Kill() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Kill()
	n.cmd.Wait()
	n.cmd = nil
}

// PID is the server process's id (0 when stopped).
func (n *NATS) PID() int {
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}
