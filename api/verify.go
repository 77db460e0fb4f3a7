package api

import (
	"net/http"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/verify"
)

// SetVerify adds the number-verification endpoints (methods A and C).
func (s *Server) SetVerify(v *verify.Service) {
	s.handle("POST /v1/verify/sms/start", func(w http.ResponseWriter, r *http.Request) error {
		var body clientNumberBody
		if err := DecodeJSON(r, &body); err != nil {
			return err
		}
		st, err := v.StartSMS(r.Context(), body.Number, phonebook.Identity{DeviceID: body.DeviceID, SIMID: body.SIMID}, s.AddrKey(r))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusAccepted, st)
	})
	s.handle("POST /v1/verify/sms/check", func(w http.ResponseWriter, r *http.Request) error {
		var body struct {
			Number   string `json:"number"`
			DeviceID string `json:"device_id"`
			SIMID    string `json:"sim_id"`
			Code     string `json:"code"`
		}
		if err := DecodeJSON(r, &body); err != nil {
			return err
		}
		creds, err := v.CheckSMS(r.Context(), body.Number, phonebook.Identity{DeviceID: body.DeviceID, SIMID: body.SIMID}, body.Code)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, creds)
	})
	s.handle("POST /v1/verify/mo/start", func(w http.ResponseWriter, r *http.Request) error {
		var body identityBody
		if err := DecodeJSON(r, &body); err != nil {
			return err
		}
		st, err := v.StartMO(r.Context(), body.identity(), s.AddrKey(r))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusCreated, st)
	})
	s.handle("POST /v1/verify/mo/poll", func(w http.ResponseWriter, r *http.Request) error {
		var body struct {
			ID          string `json:"id"`
			PollSecret  string `json:"poll_secret"`
			WaitSeconds int    `json:"wait_seconds"`
		}
		if err := DecodeJSON(r, &body); err != nil {
			return err
		}
		if body.ID == "" || body.PollSecret == "" || len(body.ID) > 64 || len(body.PollSecret) > 128 {
			return phonebook.Errorf(phonebook.EInvalid, "id and poll_secret from the start response are required")
		}
		if body.WaitSeconds < 0 || body.WaitSeconds > 30 {
			return phonebook.Errorf(phonebook.EInvalid, "wait_seconds must be 0 to 30")
		}
		res, err := v.Poll(r.Context(), body.ID, body.PollSecret, time.Duration(body.WaitSeconds)*time.Second)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, res)
	})
}
