package outboxbench

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"
)

// TestDatabaseServerByPort: the database server measured is the process
// listening on the DSN's port, even when other servers run.
func TestDatabaseServerByPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	want := fmt.Sprintf("/proc/%d", os.Getpid())
	if got := dbServerProcess("root@tcp(127.0.0.1:" + port + ")/"); got != want {
		t.Fatalf("process listening on %s: %q, want %q", port, got, want)
	}
	if cpu := procCPU(want); cpu < 0 || cpu > time.Hour {
		t.Fatalf("our CPU time read from /proc: %v", cpu)
	}
}
