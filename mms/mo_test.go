package mms

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/mm7"
)

type moFixture struct {
	mu       sync.Mutex
	uploads  []string
	injected []string
	keys     map[string]bool
}

func (f *moFixture) RouteReply(ctx context.Context, number phonebook.MSISDN, to, text string) (phonebook.MSISDN, string, bool, error) {
	if to != "10690" || number != "+8613700137000" {
		return "", "", false, nil
	}
	return "+8613600136000", text, true, nil
}

func (f *moFixture) Upload(ctx context.Context, owner phonebook.MSISDN, addrKey, name string, body io.Reader) (string, error) {
	b, _ := io.ReadAll(body)
	if string(b) == "exe" {
		return "", phonebook.Errorf(phonebook.EMediaType, "not a supported type")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.uploads = append(f.uploads, fmt.Sprintf("%s %s %s %d", owner, addrKey, name, len(b)))
	return fmt.Sprint("m", len(f.uploads)), nil
}

func (f *moFixture) InjectMMS(ctx context.Context, key string, from, to phonebook.MSISDN, text string, ids []string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if key != "" {
		if f.keys[key] {
			return "id", nil
		}
		if f.keys == nil {
			f.keys = map[string]bool{}
		}
		f.keys[key] = true
	}
	f.injected = append(f.injected, fmt.Sprintf("%s>%s %q %v", from, to, text, ids))
	return "id", nil
}

func (f *moFixture) Injected(ctx context.Context, key string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys[key], nil
}

func TestInboundMMS(t *testing.T) {
	f := &moFixture{}
	in, err := NewInbound("CN", f, f, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := in.Handler("a")
	ctx := context.Background()
	mo := &mm7.DeliverReq{TransactionID: "t-1", Sender: "13700137000", Recipients: []string{"10690"}, Parts: []mm7.Part{
		{ContentType: "image/jpeg", ContentLocation: "IMG_1.jpg", Data: []byte("jpegdata")},
		{ContentType: "application/octet-stream", ContentLocation: "x.exe", Data: []byte("exe")},
		mm7.CaptionPart("for you"),
	}, SMIL: []byte("<smil/>")}
	if err := h(ctx, mo); err == nil || isRefused(err) {
		t.Fatalf("before the relay is set: %v, want a temporary error", err)
	}
	in.SetRelay(f)
	if err := h(ctx, mo); err != nil {
		t.Fatal(err)
	}
	if len(f.injected) != 1 || f.injected[0] != `+8613700137000>+8613600136000 "for you" [m1]` {
		t.Fatalf("injected %v", f.injected)
	}
	if len(f.uploads) != 1 || !strings.HasSuffix(f.uploads[0], "+8613700137000 mmsc:a IMG_1.jpg 8") {
		t.Fatalf("uploads %v", f.uploads)
	}
	// The MMSC lost our answer and sends the same DeliverReq again: it is
	// acknowledged, and neither delivered nor its media taken again.
	if err := h(ctx, mo); err != nil {
		t.Fatal(err)
	}
	if len(f.injected) != 1 || len(f.uploads) != 1 {
		t.Fatalf("after the MMSC sent it again: injected %v, uploads %v", f.injected, f.uploads)
	}
	// Someone nobody wrote to: acknowledged and dropped.
	if err := h(ctx, &mm7.DeliverReq{Sender: "+8613900000000", Recipients: []string{"10690"}, Parts: []mm7.Part{mm7.CaptionPart("hi")}}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*mm7.DeliverReq{
		{Sender: "not a number", Recipients: []string{"10690"}},
		{Sender: "13700137000"},
		{Sender: "13700137000", Recipients: []string{"10690"}, Parts: []mm7.Part{{ContentType: "application/x-exe", Data: []byte("exe")}}},
	} {
		if err := h(ctx, bad); !isRefused(err) {
			t.Errorf("%+v: %v, want refused", bad, err)
		}
	}
	if len(f.injected) != 1 {
		t.Fatalf("injected %v", f.injected)
	}
}
