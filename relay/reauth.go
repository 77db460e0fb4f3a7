package relay

import (
	"context"
	"time"

	"github.com/phonebook/phonebook"
)

// reauthBatch is how many tokens one TokenChecker call checks.
const reauthBatch = 500

// errSessionInvalid is what a client whose token stopped authenticating
// hears before the connection closes.
var errSessionInvalid = phonebook.Errorf(phonebook.EUnauthorized,
	"the session token was revoked or has expired, or the account was blocked; log in again")

// reauthLoop checks every live session's token again each ReauthInterval,
// so that a revoked session (a new phone or SIM proved the number, logout,
// an operator's block, expiry) does not stay connected.
func (srv *Server) reauthLoop(tc TokenChecker) {
	defer srv.bg.Done()
	t := time.NewTicker(srv.cfg.ReauthInterval)
	defer t.Stop()
	for {
		select {
		case <-srv.quitBG:
			return
		case <-t.C:
			srv.recheck(srv.ctx, tc, "")
		}
	}
}

// Recheck closes number's sessions on this node whose token no longer
// authenticates, at once: the accounts service calls it after it revoked
// the number's sessions. Without a TokenChecker it does nothing.
func (srv *Server) Recheck(ctx context.Context, number phonebook.MSISDN) {
	if tc, ok := srv.auth.(TokenChecker); ok {
		srv.recheck(ctx, tc, number)
	}
}

// recheck checks the sessions of number, or of everyone when number is "".
func (srv *Server) recheck(ctx context.Context, tc TokenChecker, number phonebook.MSISDN) {
	srv.mu.Lock()
	var live []*session
	for s := range srv.sessions {
		if number == "" || s.number == number {
			live = append(live, s)
		}
	}
	srv.mu.Unlock()
	for len(live) > 0 {
		batch := live[:min(len(live), reauthBatch)]
		live = live[len(batch):]
		hashes := make([][]byte, len(batch))
		for i, s := range batch {
			hashes[i] = []byte(s.tokenHash)
		}
		invalid, err := tc.InvalidTokenHashes(ctx, hashes)
		if err != nil {
			// Nobody is closed on a failed check; the next one decides.
			if ctx.Err() == nil {
				srv.log.Warn("relay: check session tokens", "sessions", len(batch), "err", err)
			}
			return
		}
		if len(invalid) == 0 {
			continue
		}
		bad := make(map[string]bool, len(invalid))
		for _, h := range invalid {
			bad[string(h)] = true
		}
		for _, s := range batch {
			if bad[s.tokenHash] {
				srv.metrics.reauthClosed.Inc()
				srv.log.Info("relay: session closed: token no longer valid", "number", s.number, "session", s.info.SessionID)
				s.Close(errSessionInvalid)
			}
		}
	}
}
