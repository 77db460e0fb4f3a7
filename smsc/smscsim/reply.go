package smscsim

import (
	"context"
	"fmt"
	"strings"
)

// LastSource returns the source address of the last SMS the simulator
// accepted for dest (E.164, with or without "+"): where a handset's
// "reply" would send an answer. ok is false when dest received none.
func (s *Sim) LastSource(dest string) (source string, ok bool) {
	d := strings.TrimPrefix(strings.TrimSpace(dest), "+")
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.submits) - 1; i >= 0; i-- {
		if strings.TrimPrefix(s.submits[i].Dest, "+") == d {
			return s.submits[i].Source, true
		}
	}
	return "", false
}

// Reply sends an MO from the handset from to the source address of the
// last SMS it received, as pressing "reply" does: with extension routing
// that address names the conversation. It returns the address used.
func (s *Sim) Reply(ctx context.Context, from, text string) (string, error) {
	to, ok := s.LastSource(from)
	if !ok {
		return "", fmt.Errorf("smscsim: %s received no SMS to reply to", from)
	}
	if to == "" {
		return "", fmt.Errorf("smscsim: the last SMS to %s had no source address", from)
	}
	return to, s.InjectMO(ctx, from, to, text)
}
