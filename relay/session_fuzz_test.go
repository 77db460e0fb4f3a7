package relay

import (
	"io"
	"net"
	"net/netip"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// FuzzSessionFrames feeds arbitrary bytes to an authenticated session: the
// server must neither panic nor hang, and must end the session when the
// connection closes.
func FuzzSessionFrames(f *testing.F) {
	frame := func(fr *relaypb.Frame) []byte { b, _ := wire.AppendFrame(nil, fr, 0); return b }
	f.Add(frame(&relaypb.Frame{Body: &relaypb.Frame_Send{Send: &relaypb.Send{ClientMsgId: "1", To: "13900139000", Text: "hi"}}}))
	f.Add(frame(&relaypb.Frame{Body: &relaypb.Frame_Send{Send: &relaypb.Send{ClientMsgId: "2", To: "+8613800138000", Text: "self"}}}))
	f.Add(frame(&relaypb.Frame{Body: &relaypb.Frame_DeliverAck{DeliverAck: &relaypb.DeliverAck{ServerMsgId: "x"}}}))
	f.Add(frame(&relaypb.Frame{Body: &relaypb.Frame_Heartbeat{Heartbeat: &relaypb.Heartbeat{At: 1}}}))
	f.Add([]byte{0, 0, 0, 3, 0x92, 0x03, 0x00})
	srv := fuzzServer(f)
	authFrame := frame(&relaypb.Frame{Body: &relaypb.Frame_Auth{Auth: &relaypb.Auth{Token: "t"}}})
	f.Fuzz(func(t *testing.T, data []byte) {
		c1, c2 := net.Pipe()
		srv.mu.Lock()
		srv.conns.Add(1)
		srv.preAuth[c1] = netip.Addr{}
		srv.preAuthIP[netip.Addr{}]++
		srv.mu.Unlock()
		done := make(chan struct{})
		go func() {
			srv.serveTCP(c1)
			close(done)
		}()
		go io.Copy(io.Discard, c2)
		c2.Write(authFrame)
		c2.Write(data)
		c2.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			t.Fatal("session did not end after the connection closed")
		}
		if n := len(srv.Connections()); n != 0 {
			t.Fatalf("%d sessions left after close", n)
		}
	})
}
