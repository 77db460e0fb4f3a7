package api_test

import (
	"sync"
	"testing"
	"time"

	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// A number proven with a new SIM after RecycleAfter without a login has a
// new subscriber: the account starts again and the previous user's book,
// contact list, status and rescue password are gone. A new SIM while the
// user is active, the rescue password, or the same SIM keep everything.
func TestRecycledNumber(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		// The accounts service's clock moves past the inactivity period;
		// last logins are recorded at real time.
		const inactive = 90 * 24 * time.Hour
		var mu sync.Mutex
		offset := time.Duration(0)
		clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(offset) }
		sleep := func(d time.Duration) { mu.Lock(); offset += d; mu.Unlock() }
		e := newContactsEnvAccounts(t, db, contacts.Config{}, accounts.Config{RecycleAfter: inactive, Now: clock})
		const a, b = "+8613800138001", "+8613800138002"
		alice, bob := e.user(a), e.user(b)
		if r := e.do("POST", "/v1/contacts/sync", `{"full": true, "entries": [{"id": "b", "name": "Bob", "phones": [{"number": "`+b+`"}]}]}`, alice); r.Status != 200 {
			t.Fatalf("alice's sync: %d %v", r.Status, r.Body)
		}
		if r := e.do("POST", "/v1/contacts/sync", `{"full": true, "entries": [{"id": "a", "name": "Alice", "phones": [{"number": "`+a+`"}]}]}`, bob); r.Status != 200 {
			t.Fatalf("bob's sync: %d %v", r.Status, r.Body)
		}
		if r := e.do("PUT", "/v1/me/rescue", `{"password": "correct horse"}`, alice); r.Status != 200 {
			t.Fatalf("set rescue: %d %v", r.Status, r.Body)
		}
		if r := e.do("PUT", "/v1/presence", `{"status_text": "alice's status"}`, alice); r.Status != 200 {
			t.Fatalf("set status: %d %v", r.Status, r.Body)
		}
		bookOf := func(hdr map[string]string) int {
			t.Helper()
			r := e.do("GET", "/v1/contacts/restore", "", hdr)
			if r.Status != 200 {
				t.Fatalf("restore: %d %v", r.Status, r.Body)
			}
			return len(path(r.Body, "entries").([]any))
		}
		prove := func(sim string) resp {
			t.Helper()
			r := e.do("POST", "/v1/register/header", js(map[string]string{"device_id": "imei-x", "sim_id": sim}), map[string]string{header: a})
			if r.Status != 200 {
				t.Fatalf("register with %s: %d %v", sim, r.Status, r.Body)
			}
			return r
		}
		session := func(sim, key string) map[string]string {
			t.Helper()
			r := e.login(a, "imei-x", sim, key, "")
			if r.Status != 200 {
				t.Fatalf("login: %d %v", r.Status, r.Body)
			}
			return auth(r.str("token"))
		}

		// New SIM while Alice is active: the same user, everything kept.
		r := prove("sim-new")
		if r.Body["created"] != false || r.Body["recycled"] != nil {
			t.Fatalf("active user, new SIM: %v", r.Body)
		}
		if n := bookOf(session("sim-new", r.str("device_key"))); n != 1 {
			t.Fatalf("active user's book has %d entries, want 1", n)
		}

		// Inactive, but the rescue password: still Alice.
		sleep(inactive + time.Hour)
		r = e.do("POST", "/v1/login/rescue", js(map[string]string{"number": a, "device_id": "imei-x", "sim_id": "sim-rescue",
			"rescue_password": "correct horse"}), nil)
		if r.Status != 200 || r.Body["recycled"] != nil {
			t.Fatalf("rescue after inactivity: %d %v", r.Status, r.Body)
		}

		// Inactive, new SIM, proven by the operator: a new subscriber.
		sleep(inactive + time.Hour)
		r = prove("sim-stranger")
		if r.Body["created"] != true || r.Body["recycled"] != true {
			t.Fatalf("recycled number: %v", r.Body)
		}
		stranger := session("sim-stranger", r.str("device_key"))
		if n := bookOf(stranger); n != 0 {
			t.Fatalf("the new subscriber restores %d of the previous user's entries", n)
		}
		if r := e.do("GET", "/v1/contacts", "", stranger); len(path(r.Body, "contacts").([]any)) != 0 {
			t.Fatalf("the new subscriber sees the previous contact list: %v", r.Body)
		}
		if r := e.do("GET", "/v1/presence", "", stranger); r.str("status_text") != "" {
			t.Fatalf("the new subscriber has the previous status: %v", r.Body)
		}
		if r := e.do("GET", "/v1/me", "", stranger); r.Body["rescue_password_set"] != false || r.Body["login_count"] != float64(1) {
			t.Fatalf("the new subscriber's account: %v", r.Body)
		}
		r = e.do("POST", "/v1/login/rescue", js(map[string]string{"number": a, "device_id": "imei-y", "sim_id": "sim-y",
			"rescue_password": "correct horse"}), nil)
		if r.code() != "rescue_password_not_set" {
			t.Fatalf("the previous rescue password still works: %d %v", r.Status, r.Body)
		}
		// Bob still has the number in his book, but it is no longer mutual.
		r = e.do("GET", "/v1/contacts", "", bob)
		if path(r.Body, "contacts", 0, "number") != a || path(r.Body, "contacts", 0, "mutual") != false {
			t.Fatalf("bob's contact list: %v", r.Body)
		}

		// Inactive again, the same SIM: the same subscriber.
		sleep(inactive + time.Hour)
		if r := prove("sim-stranger"); r.Body["created"] != false || r.Body["recycled"] != nil {
			t.Fatalf("same SIM after inactivity: %v", r.Body)
		}
	})
}
