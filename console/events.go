package console

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/phonebook/phonebook"
)

// liveUpdate is one server-sent event: the values to put into the
// elements marked data-live="key", and the connection table's groups.
type liveUpdate struct {
	Values map[string]string `json:"values"`
	Conns  []connGroup       `json:"conns,omitempty"`
}

// events streams live updates (text/event-stream) every Interval: the
// overview's numbers, or with ?number= a number's live connections and its
// SMS states. The browser's EventSource reconnects by itself.
func (c *Console) events(w http.ResponseWriter, r *http.Request, op *operator) {
	var number phonebook.MSISDN
	if raw := r.URL.Query().Get("number"); raw != "" {
		n, err := phonebook.NormalizeMSISDN(raw, c.cfg.Region)
		if err != nil {
			http.Error(w, "invalid_number: "+err.Error(), http.StatusBadRequest)
			return
		}
		number = n
	}
	select {
	case c.streams <- struct{}{}:
		defer func() { <-c.streams }()
	default:
		w.Header().Set("Retry-After", "10")
		http.Error(w, "unavailable: too many live-update streams are open", http.StatusServiceUnavailable)
		return
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // the admin server's write timeout would cut the stream
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		var u liveUpdate
		if number != "" {
			u = c.numberUpdate(r, number)
		} else {
			d := c.collectOverview(r)
			u = liveUpdate{Values: d.Live, Conns: d.Conns}
		}
		b, err := json.Marshal(u)
		if err != nil {
			return
		}
		if _, err := w.Write([]byte("event: update\ndata: " + string(b) + "\n\n")); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-c.done:
			return
		case <-t.C:
		}
	}
}

func (c *Console) numberUpdate(r *http.Request, n phonebook.MSISDN) liveUpdate {
	v := map[string]string{}
	conns := 0
	if c.svc.Connections != nil {
		for _, ci := range c.svc.Connections() {
			if ci.Number == n {
				conns++
			}
		}
	}
	v["number.connections"] = strconv.Itoa(conns)
	if sms, err := c.svc.Store.RecentSMS(r.Context(), n, 20); err == nil {
		for _, m := range sms {
			v["sms."+strconv.FormatInt(m.ID, 10)+".state"] = m.State
		}
	}
	return liveUpdate{Values: v}
}
