package relay

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// readBufSize is small on purpose: most connections are idle, and a few
// KiB still batch many 100-byte frames into one read.
const readBufSize = 2048

// serveTCP runs one TCP connection: authentication, then a reader (this
// goroutine) and a writer goroutine that owns the socket's write side.
func (srv *Server) serveTCP(nc net.Conn) {
	defer srv.conns.Done()
	defer nc.Close()
	cfg := &srv.cfg
	if tc, ok := nc.(*net.TCPConn); ok && cfg.SocketWriteBuffer > 0 {
		tc.SetWriteBuffer(cfg.SocketWriteBuffer)
	}
	fr := NewFrameReader(bufio.NewReaderSize(nc, readBufSize), cfg.MaxFrameSize)

	nc.SetReadDeadline(time.Now().Add(cfg.AuthTimeout))
	var f relaypb.Frame
	if err := fr.Read(&f); err != nil {
		if isTimeout(err) {
			err = phonebook.Errorf(phonebook.ETimeout, "no Auth frame within %s", cfg.AuthTimeout)
		}
		srv.refuse(nc, err)
		return
	}
	srv.metrics.framesIn.Inc()
	auth := f.GetAuth()
	if auth == nil {
		srv.refuse(nc, phonebook.Errorf(phonebook.EUnauthorized, "the first frame must be Auth, not %s", FrameKind(&f)))
		return
	}
	ctx, cancel := context.WithTimeout(srv.ctx, cfg.AuthTimeout)
	number, device, err := srv.auth.Authenticate(ctx, auth.GetToken())
	cancel()
	if err == nil && auth.GetDeviceId() != "" && auth.GetDeviceId() != device {
		err = phonebook.Errorf(phonebook.EUnauthorized, "the token belongs to another device")
	}
	if err != nil {
		srv.refuse(nc, err)
		return
	}
	s := newSession(srv, number, device, ConnInfo{
		Number: number, DeviceID: device, SessionID: srv.newID(), Node: cfg.NodeID, Transport: "tcp",
		RemoteAddr: nc.RemoteAddr().String(), ConnectedAt: time.Now().UTC(), ClientVersion: truncate(auth.GetClientVersion(), 64),
	})
	if !srv.register(s) {
		srv.refuse(nc, phonebook.Errorf(phonebook.EShuttingDown, "server is shutting down"))
		return
	}
	defer srv.unregister(s)
	s.Push(&relaypb.Frame{Body: &relaypb.Frame_AuthOk{AuthOk: &relaypb.AuthOK{
		Number: string(number), SessionId: s.info.SessionID, HeartbeatSecs: uint32(cfg.HeartbeatInterval / time.Second),
	}}})
	srv.log.Debug("relay: login", "number", number, "device", device, "session", s.info.SessionID, "addr", s.info.RemoteAddr)

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		srv.writeLoop(s, nc)
	}()
	drainDone := make(chan struct{})
	go func() {
		defer close(drainDone)
		s.drainLoop(srv.ctx)
	}()
	s.Wake()

	err = srv.readLoop(s, nc, fr)
	s.Close(err)
	<-writerDone
	<-drainDone
}

// readLoop feeds frames to the session until the connection fails. The
// read deadline is the idle timeout; it is pushed forward at most every
// quarter timeout, so a busy connection does not reset a timer per frame
// and a silent one is closed between ¾ and 1 idle timeout after its last
// frame.
func (srv *Server) readLoop(s *session, nc net.Conn, fr *FrameReader) error {
	idle := srv.cfg.IdleTimeout
	var deadlineSet time.Time
	var f relaypb.Frame
	for {
		now := time.Now()
		if now.Sub(deadlineSet) > idle/4 {
			nc.SetReadDeadline(now.Add(idle))
			deadlineSet = now
		}
		if err := fr.Read(&f); err != nil {
			switch {
			case isTimeout(err):
				return phonebook.Errorf(phonebook.ETimeout, "nothing received for %s; send heartbeats", idle)
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF):
				return nil
			case phonebook.ErrorCode(err) == phonebook.EInternal:
				return nil // connection reset and the like: nobody to tell
			default:
				return err
			}
		}
		srv.metrics.framesIn.Inc()
		if err := s.handle(&f, now); err != nil {
			return err
		}
		select {
		case <-s.closing:
			return nil
		default:
		}
	}
}

// writeLoop owns the socket's write side: it encodes queued frames into one
// buffer and writes when the queue is empty (or the buffer large), so a
// burst costs one syscall. The buffer is dropped when idle, so idle
// connections hold none.
func (srv *Server) writeLoop(s *session, nc net.Conn) {
	defer nc.Close()
	for {
		var f *relaypb.Frame
		select {
		case f = <-s.out:
		case <-s.closing:
			if s.closeErr != nil {
				nc.SetWriteDeadline(time.Now().Add(time.Second))
				b, _ := AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Error{Error: s.closeErr}}, 0)
				nc.Write(b)
			}
			return
		}
		bp := writeBufs.Get().(*[]byte)
		buf := (*bp)[:0]
		n := 0
		var err error
		for f != nil {
			if buf, err = AppendFrame(buf, f, srv.cfg.MaxFrameSize); err != nil {
				srv.log.Error("relay: encode frame", "kind", FrameKind(f), "err", err)
			} else {
				n++
			}
			f = nil
			if len(buf) < 64<<10 {
				select {
				case f = <-s.out:
				default:
				}
			}
		}
		nc.SetWriteDeadline(time.Now().Add(srv.cfg.WriteTimeout))
		_, err = nc.Write(buf)
		if cap(buf) <= 128<<10 {
			*bp = buf
			writeBufs.Put(bp)
		}
		if err != nil {
			s.Close(nil)
			return
		}
		srv.metrics.framesOut.Add(float64(n))
	}
}

// writeBufs recycles write buffers between connections, so an idle
// connection holds none.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 8<<10); return &b }}

// refuse answers a connection that did not get a session and closes it.
func (srv *Server) refuse(nc net.Conn, err error) {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	if phonebook.ErrorCode(err) == phonebook.EInternal {
		srv.log.Warn("relay: connection refused", "addr", nc.RemoteAddr().String(), "err", err)
	}
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	b, _ := AppendFrame(nil, errorFrame(err), 0)
	nc.Write(b)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
