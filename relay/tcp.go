package relay

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// readBufSize is small on purpose: most connections are idle, and a few
// KiB still batch many 100-byte frames into one read.
const readBufSize = 2048

// serveTCP runs one TCP connection: authentication, then a reader (this
// goroutine) and a writer goroutine that owns the socket's write side.
func (srv *Server) serveTCP(nc net.Conn) {
	defer srv.conns.Done()
	defer nc.Close()
	defer srv.authDone(nc)
	cfg := &srv.cfg
	if tc, ok := nc.(*net.TCPConn); ok && cfg.SocketWriteBuffer > 0 {
		tc.SetWriteBuffer(cfg.SocketWriteBuffer)
	}
	fr := wire.NewFrameReader(bufio.NewReaderSize(nc, readBufSize), cfg.MaxFrameSize)

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
	s, err := srv.login(&f, "tcp", nc.RemoteAddr().String(), nc)
	if err != nil {
		switch phonebook.ErrorCode(err) {
		case phonebook.EInternal, phonebook.EShuttingDown, phonebook.EUnavailable:
			// The server's trouble, not the client's.
		default:
			srv.authFails.allow(srv.clientNet(nc), time.Now())
		}
		srv.refuse(nc, err)
		return
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		srv.writeLoop(s, nc)
	}()
	err = srv.readLoop(s, nc, fr)
	s.Close(err)
	<-writerDone
	srv.logout(s)
}

// readLoop feeds frames to the session until the connection fails. The
// read deadline is the idle timeout; it is pushed forward at most every
// quarter timeout, so a busy connection does not reset a timer per frame
// and a silent one is closed between ¾ and 1 idle timeout after its last
// frame.
func (srv *Server) readLoop(s *session, nc net.Conn, fr *wire.FrameReader) error {
	idle := srv.cfg.IdleTimeout
	var deadlineSet time.Time
	var f relaypb.Frame
	now := time.Now()
	for {
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
		// The frame's time (a Send's sent_at) is when it arrived, not when
		// the read began: the connection may have been idle for long.
		now = time.Now()
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
	var frames []*relaypb.Frame
	for {
		select {
		case <-s.out.ready:
		case <-s.closing:
			if s.closeErr != nil {
				nc.SetWriteDeadline(time.Now().Add(time.Second))
				b, _ := wire.AppendFrame(nil, &relaypb.Frame{Body: &relaypb.Frame_Error{Error: s.closeErr}}, 0)
				nc.Write(b)
			}
			return
		}
		frames = s.out.takeAll(frames)
		if len(frames) == 0 {
			continue
		}
		bp := writeBufs.Get().(*[]byte)
		buf := (*bp)[:0]
		n := 0
		var werr error
		for i, f := range frames {
			var err error
			if buf, err = wire.AppendFrame(buf, f, srv.cfg.MaxFrameSize); err != nil {
				srv.log.Error("relay: encode frame", "kind", wire.FrameKind(f), "err", err)
			} else {
				n++
			}
			frames[i] = nil
			if len(buf) >= 64<<10 || i == len(frames)-1 {
				nc.SetWriteDeadline(time.Now().Add(srv.cfg.WriteTimeout))
				if _, werr = nc.Write(buf); werr != nil {
					clear(frames[i:])
					break
				}
				buf = buf[:0]
			}
		}
		if cap(buf) <= 128<<10 {
			*bp = buf[:0]
			writeBufs.Put(bp)
		}
		if cap(frames) > 64 {
			frames = nil
		}
		if werr != nil {
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
	b, _ := wire.AppendFrame(nil, errorFrame(err), 0)
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
