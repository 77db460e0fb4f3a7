package main

import (
	"context"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/mm7"
)

// TestMMSCSimCommand runs `phonebook mmsc-sim` against a VASP endpoint:
// an MMS submitted to it is printed and reported delivered, and MO MMS go
// out from stdin and from `mmsc-sim mo --file`.
func TestMMSCSimCommand(t *testing.T) {
	var mu sync.Mutex
	var reports []*mm7.DeliveryReportReq
	var mos []*mm7.DeliverReq
	vasp := httptest.NewServer(&mm7.Handler{
		DeliveryReport: func(_ context.Context, r *mm7.DeliveryReportReq) mm7.Status {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, r)
			return mm7.Status{}
		},
		Deliver: func(_ context.Context, r *mm7.DeliverReq) mm7.Status {
			mu.Lock()
			defer mu.Unlock()
			mos = append(mos, r)
			return mm7.Status{}
		},
	})
	defer vasp.Close()
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return len(reports), len(mos)
	}

	ctx, cancel := context.WithTimeout(context.Background(), poll.Patience)
	defer cancel()
	simCtx, stopSim := context.WithCancel(ctx)
	stdin, typeLine := io.Pipe()
	var out lockedBuffer
	c := newRootCmd()
	c.SetOut(&out)
	c.SetErr(&out)
	c.SetIn(stdin)
	c.SetArgs([]string{"mmsc-sim", "--addr", "127.0.0.1:0", "--http", "127.0.0.1:0", "--vasp-url", vasp.URL, "--report-delay", "0s", "--not-capable", "+86137"})
	done := make(chan error, 1)
	go func() { done <- c.ExecuteContext(simCtx) }()
	waitOutput(t, ctx, &out, "HTTP control on")
	mm7URL := regexp.MustCompile(`MM7 on (\S+)`).FindStringSubmatch(out.String())[1]
	control := regexp.MustCompile(`HTTP control on http://(\S+)`).FindStringSubmatch(out.String())[1]

	client := mm7.NewClient(mm7.ClientConfig{URL: mm7URL})
	defer client.Close()
	parts := []mm7.Part{mm7.CaptionPart("hello from the VASP")}
	rsp, err := client.Submit(ctx, &mm7.SubmitReq{SenderAddress: "10690042", To: []string{"+8613800138000"}, Parts: parts, SMIL: mm7.BuildSMIL(parts, "hello from the VASP"), DeliveryReport: true})
	if err != nil {
		t.Fatal(err)
	}
	waitOutput(t, ctx, &out, `"hello from the VASP"`)
	waitOutput(t, ctx, &out, rsp.MessageID)
	poll.Until(t, "the delivery report", func() bool { n, _ := count(); return n == 1 })
	if _, err := client.Submit(ctx, &mm7.SubmitReq{To: []string{"+8613700137000"}, Parts: parts}); !mm7.IsNotCapable(err) {
		t.Fatalf("to a not-capable number: %v", err)
	}

	typeLine.Write([]byte("MO +8613900001111 10690042 typed on a phone\n"))
	waitOutput(t, ctx, &out, "MMS from +8613900001111 to 10690042 delivered")

	photo := filepath.Join(t.TempDir(), "photo.png")
	os.WriteFile(photo, []byte("\x89PNG\r\n\x1a\nnot really"), 0o600)
	mo := newRootCmd()
	var moOut lockedBuffer
	mo.SetOut(&moOut)
	mo.SetErr(&moOut)
	mo.SetArgs([]string{"mmsc-sim", "mo", "--http", control, "--from", "+8613900001111", "--to", "10690042", "--file", photo, "look"})
	if err := mo.ExecuteContext(ctx); err != nil {
		t.Fatalf("mmsc-sim mo: %v\n%s", err, moOut.String())
	}
	mu.Lock()
	n, last := len(mos), mos[len(mos)-1]
	mu.Unlock()
	if n != 2 || len(last.Parts) != 2 || last.Parts[0].ContentType != "image/png" || last.Parts[0].ContentLocation != "photo.png" || string(last.Parts[1].Data) != "look" {
		t.Fatalf("MO %+v", last)
	}

	stopSim()
	typeLine.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
