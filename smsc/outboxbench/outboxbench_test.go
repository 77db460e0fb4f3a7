package outboxbench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook/smsc/outboxbench"
)

// TestRun drains a small outbox in each mode against the in-process
// simulator; Run itself fails unless every message was recorded exactly
// once and reached its final state.
func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    outboxbench.Options
	}{
		{"prefilled", outboxbench.Options{}},
		{"fed", outboxbench.Options{Producers: 4}},
		{"receipts", outboxbench.Options{Receipts: true, RespDelay: time.Millisecond}},
		{"two binds", outboxbench.Options{Binds: 2, Window: 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.Messages, o.Warmup = 300, 50
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			r, err := outboxbench.Run(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if r.Messages != 300 || r.PerSecond <= 0 || r.Elapsed <= 0 {
				t.Fatalf("result %+v", r)
			}
			if !strings.Contains(r.String(), "SMS/s") {
				t.Fatalf("String() = %q", r.String())
			}
		})
	}
}

func TestRunRefusesUnknownStore(t *testing.T) {
	_, err := outboxbench.Run(context.Background(), outboxbench.Options{Driver: "oracle"})
	if err == nil || !strings.Contains(err.Error(), "oracle") {
		t.Fatalf("driver oracle: %v", err)
	}
}
