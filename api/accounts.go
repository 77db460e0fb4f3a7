package api

import (
	"context"
	"net/http"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
)

type identityBody struct {
	DeviceID string `json:"device_id"`
	SIMID    string `json:"sim_id"`
}

func (b identityBody) identity() phonebook.Identity {
	return phonebook.Identity{DeviceID: b.DeviceID, SIMID: b.SIMID}
}

// POST /v1/register/header — method D.
func (s *Server) registerHeader(w http.ResponseWriter, r *http.Request) error {
	var body identityBody
	if err := DecodeJSON(r, &body); err != nil {
		return err
	}
	if err := body.identity().Validate(); err != nil {
		return err
	}
	if err := s.limitHeader(r, body.identity()); err != nil {
		return err
	}
	creds, err := s.accounts.RegisterHeader(r.Context(), PeerAddr(r), r.Header.Get(s.cfg.NumberHeader), body.identity())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, creds)
}

// limitHeader limits method D. Behind the operator's gateway every
// subscriber arrives from the gateway's few addresses, so a per-address
// limit would soon refuse them all: a trusted gateway's requests are
// limited per number and per identity instead. Anyone else is limited per
// address (and then refused as untrusted).
func (s *Server) limitHeader(r *http.Request, id phonebook.Identity) error {
	if !s.accounts.TrustedPeer(PeerAddr(r)) {
		return s.limitIP(r, "register", s.cfg.MaxRegistrationsPerIP)
	}
	n, err := s.accounts.Normalize(r.Header.Get(s.cfg.NumberHeader))
	if err != nil {
		return nil // RegisterHeader answers a missing or bad header
	}
	return s.limit(r, []limitSpec{
		{"register_num:" + string(n), 24 * time.Hour, s.cfg.MaxHeaderPerNumberDay, "too many registrations of this number today"},
		{"register_id:" + id.DeviceID + "/" + id.SIMID, 24 * time.Hour, s.cfg.MaxHeaderPerIdentityDay, "too many registrations from this phone and SIM today"},
	})
}

type clientNumberBody struct {
	Number   string `json:"number"`
	DeviceID string `json:"device_id"`
	SIMID    string `json:"sim_id"`
}

// POST /v1/register/client — method B.
func (s *Server) registerClient(w http.ResponseWriter, r *http.Request) error {
	var body clientNumberBody
	if err := DecodeJSON(r, &body); err != nil {
		return err
	}
	id := phonebook.Identity{DeviceID: body.DeviceID, SIMID: body.SIMID}
	if err := id.Validate(); err != nil {
		return err
	}
	if err := s.limitIP(r, "register", s.cfg.MaxRegistrationsPerIP); err != nil {
		return err
	}
	creds, err := s.accounts.RegisterClientNumber(r.Context(), body.Number, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, creds)
}

type loginBody struct {
	Number         string `json:"number"`
	DeviceID       string `json:"device_id"`
	SIMID          string `json:"sim_id"`
	DeviceKey      string `json:"device_key"`
	RescuePassword string `json:"rescue_password"`
	// MMSCapable is the handset's report of whether it can receive MMS
	// (docs/mms.md); absent = no report.
	MMSCapable *bool `json:"mms_capable"`
}

// POST /v1/login
func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	var body loginBody
	if err := DecodeJSON(r, &body); err != nil {
		return err
	}
	var sess accounts.Session
	err := s.attempt(r, "login", time.Hour, s.cfg.MaxLoginFailuresPerAddressHour, func() (err error) {
		sess, err = s.accounts.Login(r.Context(), accounts.LoginRequest{
			Number:         body.Number,
			Identity:       phonebook.Identity{DeviceID: body.DeviceID, SIMID: body.SIMID},
			DeviceKey:      body.DeviceKey,
			RescuePassword: body.RescuePassword,
		})
		return err
	})
	if err != nil {
		return err
	}
	if body.MMSCapable != nil {
		s.reportMMSCapable(r.Context(), sess.Number, *body.MMSCapable)
	}
	return writeJSON(w, http.StatusOK, sess)
}

// SetMMSCapabilityReporter sets where a handset's report of MMS
// capability at login goes (the mms package's capability store). Without
// one the field is accepted and ignored. Set it before serving.
func (s *Server) SetMMSCapabilityReporter(f func(ctx context.Context, number phonebook.MSISDN, capable bool) error) {
	s.mmsCapable = f
}

// reportMMSCapable records the report; a failure is logged, never the
// login's: the capability can wait for the next login.
func (s *Server) reportMMSCapable(ctx context.Context, n phonebook.MSISDN, capable bool) {
	if s.mmsCapable == nil {
		return
	}
	if err := s.mmsCapable(ctx, n, capable); err != nil {
		s.log.Warn("login: MMS capability report not recorded", "number", n, "err", err)
	}
}

type rescueBody struct {
	Number         string `json:"number"`
	DeviceID       string `json:"device_id"`
	SIMID          string `json:"sim_id"`
	RescuePassword string `json:"rescue_password"`
}

// POST /v1/login/rescue — new phone or SIM, proven by the rescue password.
func (s *Server) rescue(w http.ResponseWriter, r *http.Request) error {
	var body rescueBody
	if err := DecodeJSON(r, &body); err != nil {
		return err
	}
	var creds accounts.Credentials
	var sess accounts.Session
	err := s.attempt(r, "rescue", 24*time.Hour, s.cfg.MaxRescueFailuresPerAddressDay, func() (err error) {
		creds, sess, err = s.accounts.Rescue(r.Context(), body.Number,
			phonebook.Identity{DeviceID: body.DeviceID, SIMID: body.SIMID}, body.RescuePassword)
		return err
	})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{
		"number": creds.Number, "device_key": creds.DeviceKey, "token": sess.Token, "expires_at": sess.ExpiresAt,
	})
}

// POST /v1/logout
func (s *Server) logout(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	if err := s.accounts.Logout(r.Context(), p); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

type meResponse struct {
	Number     phonebook.MSISDN `json:"number"`
	DeviceID   string           `json:"device_id"`
	SIMID      string           `json:"sim_id"`
	CreatedAt  time.Time        `json:"created_at"`
	LastLogin  *time.Time       `json:"last_login,omitempty"`
	LoginCount int64            `json:"login_count"`
	RescueSet  bool             `json:"rescue_password_set"`
	SecureMode bool             `json:"secure_mode"`
	ProvenBy   string           `json:"proven_by"`
}

// GET /v1/me
func (s *Server) me(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	u, err := s.accounts.User(r.Context(), p.Number)
	if err != nil {
		return err
	}
	resp := meResponse{Number: u.Number, DeviceID: u.DeviceID, SIMID: u.SIMID, CreatedAt: u.CreatedAt,
		LoginCount: u.LoginCount, RescueSet: u.RescueHash != "", SecureMode: u.SecureMode, ProvenBy: u.ProvenBy}
	if !u.LastLogin.IsZero() {
		resp.LastLogin = &u.LastLogin
	}
	return writeJSON(w, http.StatusOK, resp)
}

type rescueSetBody struct {
	Password        string `json:"password"`
	CurrentPassword string `json:"current_password"`
	SecureMode      *bool  `json:"secure_mode"`
}

// PUT /v1/me/rescue — set or change the rescue password and login mode.
func (s *Server) setRescue(w http.ResponseWriter, r *http.Request, p accounts.Principal) error {
	var body rescueSetBody
	if err := DecodeJSON(r, &body); err != nil {
		return err
	}
	if body.Password == "" && body.SecureMode == nil {
		return phonebook.Errorf(phonebook.EInvalid, "give password, secure_mode, or both")
	}
	u, err := s.accounts.User(r.Context(), p.Number)
	if err != nil {
		return err
	}
	secure := u.SecureMode
	if body.SecureMode != nil {
		secure = *body.SecureMode
	}
	if err := s.accounts.SetRescue(r.Context(), p, body.Password, body.CurrentPassword, secure); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]any{"rescue_password_set": u.RescueHash != "" || body.Password != "", "secure_mode": secure})
}
