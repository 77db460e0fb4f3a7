package smsc

// This file holds a link's connections: each conn binds to the SMSC and
// rebinds with jittered backoff when its session ends.

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu"

	"github.com/phonebook/phonebook/smsc/internal/wire"
)

// conn is one of a link's connections and its reconnect loop.
type conn struct {
	link     *Link
	role     string
	bindID   pdu.ID
	inflight int // submits outstanding on it; guarded by link.mu

	mu      sync.Mutex
	cur     *session
	closed  bool
	since   time.Time
	lastErr string
}

func (c *conn) session() *session {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *conn) run(ctx context.Context) {
	l := c.link
	backoff := l.cfg.ReconnectMin
	for {
		s, err := c.bind(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.setErr(err)
			l.log.Warn("smpp bind failed", "conn", c.role, "addr", l.cfg.Addr, "err", err, "retry_in", backoff)
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, l.cfg.ReconnectMax)
			continue
		}
		if !c.setSession(s) {
			s.shutdown()
			return
		}
		l.refreshUp()
		l.wakeAll()
		l.log.Info("smpp bound", "conn", c.role, "addr", l.cfg.Addr)
		select {
		case <-s.done:
		case <-ctx.Done():
			c.shutdown()
		}
		c.mu.Lock()
		c.cur = nil
		c.since = time.Now()
		c.lastErr = s.err.Error()
		c.mu.Unlock()
		l.refreshUp()
		l.wakeAll()
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("smpp connection lost", "conn", c.role, "err", s.err)
		backoff = l.cfg.ReconnectMin
		if !sleep(ctx, jitter(backoff)) {
			return
		}
	}
}

func (c *conn) setErr(err error) {
	c.mu.Lock()
	c.lastErr = err.Error()
	c.mu.Unlock()
}

// setSession publishes a bound session; false when the link is shutting down.
func (c *conn) setSession(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.cur, c.since, c.lastErr = s, time.Now(), ""
	return true
}

func (c *conn) shutdown() {
	c.mu.Lock()
	c.closed = true
	s := c.cur
	c.mu.Unlock()
	if s != nil {
		s.shutdown()
	}
}

// bind dials and binds one connection.
func (c *conn) bind(ctx context.Context) (*session, error) {
	l := c.link
	cfg := l.cfg
	dctx, cancel := context.WithTimeout(ctx, cfg.RespTimeout)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(dctx, "tcp", cfg.Addr)
	if err != nil {
		l.m.binds.WithLabelValues(cfg.Name, "dial_error").Inc()
		return nil, fmt.Errorf("dial %s: %w", cfg.Addr, err)
	}
	if cfg.TLS {
		// Handshake apart from the dial, so that a failure says which step
		// failed: a plain-TCP SMSC never answers the ClientHello.
		tc := tls.Client(nc, &tls.Config{ServerName: cfg.TLSServerName, InsecureSkipVerify: cfg.TLSInsecureSkipVerify, MinVersion: tls.VersionTLS12})
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			l.m.binds.WithLabelValues(cfg.Name, "tls_error").Inc()
			return nil, fmt.Errorf("TLS handshake with %s failed (does it speak TLS on this port?): %w", cfg.Addr, err)
		}
		nc = tc
	}
	s := newSession(l, c.role, nc)
	resp, err := s.request(c.bindID, func(seq uint32) ([]byte, error) {
		b := pdu.NewBindTransceiver()
		b.Header().ID, b.Header().Seq = c.bindID, seq
		f := b.Fields()
		f.Set("system_id", cfg.SystemID)
		f.Set("password", cfg.Password)
		f.Set("system_type", cfg.SystemType)
		f.Set("interface_version", uint8(0x34))
		return wire.Encode(b)
	})
	if err != nil {
		s.close(err)
		l.m.binds.WithLabelValues(cfg.Name, "error").Inc()
		return nil, fmt.Errorf("bind: %w", err)
	}
	if st := uint32(resp.Header.Status); st != 0 || resp.Header.ID == pdu.GenericNACKID {
		err := fmt.Errorf("bind refused: %s (0x%08X)", StatusName(st), st)
		s.close(err)
		l.m.binds.WithLabelValues(cfg.Name, StatusName(st)).Inc()
		return nil, err
	}
	l.m.binds.WithLabelValues(cfg.Name, "ESME_ROK").Inc()
	s.bound(ctx)
	return s, nil
}

// jitter spreads reconnects of many servers over [d/2, d). Not security
// sensitive, hence math/rand.
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
