package relay

import (
	"context"
	"net"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay/wire"
)

// A transport (tcp.go, udp.go) moves frames between a client and a
// session. Its contract:
//
//  1. Decode the first frame and call login. On error send
//     errorFrame(err) and drop the client.
//  2. Run a writer that owns the client's write side: on s.out.ready, send
//     every frame of s.out.takeAll; on s.closing, send s.closeErr (when
//     set) and stop.
//  3. Feed every later frame to s.handle; a returned error closes the
//     session (s.Close(err)). Detect silence (Config.IdleTimeout) and close
//     with ETimeout.
//  4. When done: s.Close(reason), wait for the writer, then logout.
//
// Everything else (routing, acknowledgements, storage, replacement of an
// older login, offline drain) is the session's.

// login authenticates an Auth frame with the token it carries and opens a
// session (TCP).
func (srv *Server) login(f *relaypb.Frame, transport, remoteAddr string, conn net.Conn) (*session, error) {
	auth := f.GetAuth()
	if auth == nil {
		return nil, phonebook.Errorf(phonebook.EUnauthorized, "the first frame must be Auth, not %s", wire.FrameKind(f))
	}
	ctx, cancel := context.WithTimeout(srv.ctx, srv.cfg.AuthTimeout)
	number, device, err := srv.auth.Authenticate(ctx, auth.GetToken())
	cancel()
	if err != nil {
		return nil, err
	}
	return srv.open(auth, number, device, phonebook.TokenHash(auth.GetToken()), transport, remoteAddr, conn)
}

// open opens the session of an authenticated login: Auth's device id, when
// given, must be the session's. The AuthOK frame is queued and the offline
// drain started.
func (srv *Server) open(auth *relaypb.Auth, number phonebook.MSISDN, device string, tokenHash []byte, transport, remoteAddr string, conn net.Conn) (*session, error) {
	var err error
	if auth.GetDeviceId() != "" && auth.GetDeviceId() != device {
		err = phonebook.Errorf(phonebook.EUnauthorized, "the token belongs to another device")
	}
	if err != nil {
		return nil, err
	}
	s := newSession(srv, number, device, ConnInfo{
		Number: number, DeviceID: device, SessionID: srv.newID(), Node: srv.cfg.NodeID, Transport: transport,
		RemoteAddr: remoteAddr, ConnectedAt: time.Now().UTC(), ClientVersion: truncate(auth.GetClientVersion(), 64),
	})
	s.conn = conn
	s.tokenHash = string(tokenHash)
	if !srv.register(s) {
		return nil, phonebook.Errorf(phonebook.EShuttingDown, "server is shutting down")
	}
	s.Push(&relaypb.Frame{Body: &relaypb.Frame_AuthOk{AuthOk: &relaypb.AuthOK{
		Number: string(number), SessionId: s.info.SessionID, HeartbeatSecs: uint32(srv.cfg.HeartbeatInterval / time.Second),
	}}})
	srv.log.Debug("relay: login", "number", number, "device", device, "session", s.info.SessionID, "transport", transport, "addr", remoteAddr)
	srv.contactsLogin(s)
	s.Wake()
	return s, nil
}

// logout finishes a closed session: it waits for the session's own
// goroutines and removes it from the server.
func (srv *Server) logout(s *session) {
	s.drains.Wait()
	srv.unregister(s)
	srv.contactsLogout(s)
}
