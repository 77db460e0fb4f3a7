package store_test

import (
	"context"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func TestResetOnline(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		on, busy, off, text, act := "online", "busy", store.StatusOffline, "in a meeting", "in_call"
		set := func(n phonebook.MSISDN, im string) {
			if _, _, err := db.UpdateStatus(ctx, n, store.StatusUpdate{IMStatus: &im, StatusText: &text, Activity: &act}); err != nil {
				t.Fatal(err)
			}
		}
		set("+8613800138000", on)
		set("+8613900139000", busy)
		set("+8613700137000", off)
		n, err := db.ResetOnline(ctx)
		if err != nil || n != 2 {
			t.Fatalf("reset: %d %v", n, err)
		}
		for _, num := range []phonebook.MSISDN{"+8613800138000", "+8613900139000"} {
			st, err := db.UserStatus(ctx, num)
			if err != nil || st.IMStatus != off || st.Activity != "" || st.StatusText != text {
				t.Fatalf("%s after reset: %+v %v", num, st, err)
			}
		}
	})
}
