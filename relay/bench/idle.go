package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// HoldConnections opens n authenticated connections as users first..first+n-1
// and returns them open; the caller closes them. Run it in a separate
// process from the server so that only the server's memory is measured.
func HoldConnections(ctx context.Context, addr string, first, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, 0, n)
	var d net.Dialer
	for i := range n {
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return conns, fmt.Errorf("connection %d: %w", i, err)
		}
		conns = append(conns, nc)
		b, _ := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: Token(first + i)}}}, 0)
		if _, err := nc.Write(b); err != nil {
			return conns, err
		}
		var f relaypb.Frame
		if err := wire.NewFrameReader(bufio.NewReaderSize(nc, 64), 0).Read(&f); err != nil || f.GetAuthOk() == nil {
			return conns, fmt.Errorf("connection %d: no AuthOK: %v %v", i, err, &f)
		}
	}
	return conns, nil
}

// MemStats is the process's memory as the kernel and the Go runtime see it.
type MemStats struct {
	RSS       uint64 // resident set, from /proc/self/status
	HeapInuse uint64
	StackSys  uint64
}

// ReadMemStats collects garbage and then reads the figures.
func ReadMemStats() MemStats {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return MemStats{RSS: rss(), HeapInuse: m.HeapInuse, StackSys: m.StackSys}
}

func rss() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}
