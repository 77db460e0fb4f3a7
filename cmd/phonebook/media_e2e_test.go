package main

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
)

func e2eJPEG(t testing.TB, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x * y), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mediaPhone is a logged-in phone with its HTTP session.
type mediaPhone struct {
	*client.Client
	api   *client.API
	token string
}

func mediaPhoneAt(t *testing.T, m *Main, number string) *mediaPhone {
	t.Helper()
	token, device := account(t, m.HTTPAddr(), number)
	c := dialRelay(t, m.RelayAddr(), token, device)
	return &mediaPhone{Client: c, api: &client.API{BaseURL: "http://" + m.HTTPAddr()}, token: token}
}

// sendMedia uploads body through p's server and sends it to to with a
// caption until the relay answers DELIVERED (a cluster learns where the
// recipient is through NATS: stored copies are drained from deliveries).
func sendMediaDelivered(t *testing.T, p *mediaPhone, to *mediaPhone, number, caption string, body []byte) (client.Media, *relaypb.Deliver) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), stepPatience) // generous: only matters when failing
	defer cancel()
	up, err := p.api.UploadMedia(ctx, p.token, "photo.jpg", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for {
		pend, err := p.SendMsg(&relaypb.Send{ClientMsgId: p.NewClientMsgID(), To: number, Text: caption, Media: []*relaypb.MediaRef{{Id: up.ID}}})
		if err != nil {
			t.Fatal(err)
		}
		res, err := pend.Wait(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.State == relaypb.MessageState_FAILED {
			t.Fatalf("send: %v", res.Error)
		}
		select {
		case d := <-to.Deliveries():
			if res.State == relaypb.MessageState_DELIVERED {
				return up, d
			}
		case <-ctx.Done():
			t.Fatal("nothing delivered")
		}
	}
}

// A photo with a caption goes from one phone to another through a real
// server: uploaded over HTTP, sent over the relay, downloaded (and
// resumed) by the recipient over HTTP; a third phone cannot read it.
func TestMediaMessageEndToEnd(t *testing.T) {
	m := startMain(t, testConfig(t))
	alice := mediaPhoneAt(t, m, "13800138000")
	bob := mediaPhoneAt(t, m, "13900139000")
	carol := mediaPhoneAt(t, m, "13700137000")
	photo := e2eJPEG(t, 320, 240)
	up, d := sendMediaDelivered(t, alice, bob, "13900139000", "sunset", photo)
	if d.Text != "sunset" || d.Type != relaypb.MessageType_IMAGE || len(d.Media) != 1 || d.Media[0].Id != up.ID ||
		d.Media[0].ContentType != "image/jpeg" || d.Media[0].Width != 320 || !d.Media[0].Thumbnail {
		t.Fatalf("deliver %v", d)
	}
	ctx := context.Background()
	var got bytes.Buffer
	if _, ct, err := bob.api.DownloadMedia(ctx, bob.token, up.ID, false, 0, &got); err != nil || ct != "image/jpeg" || !bytes.Equal(got.Bytes(), photo) {
		t.Fatalf("bob downloads: %s %v", ct, err)
	}
	got.Reset()
	if _, _, err := bob.api.DownloadMedia(ctx, bob.token, up.ID, false, 500, &got); err != nil || !bytes.Equal(got.Bytes(), photo[500:]) {
		t.Fatalf("bob resumes: %v", err)
	}
	if _, _, err := carol.api.DownloadMedia(ctx, carol.token, up.ID, false, 0, &got); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Fatalf("carol: %v", err)
	}
}

// Cluster: media uploaded through node A's HTTP and sent from A is
// delivered to a phone on node B, which downloads it from node B.
func TestMediaAcrossNodesEndToEnd(t *testing.T) {
	a, b := twoNodes(t)
	alice := mediaPhoneAt(t, a, "13800138000")
	bob := mediaPhoneAt(t, b, "13900139000")
	photo := e2eJPEG(t, 200, 150)
	up, d := sendMediaDelivered(t, alice, bob, "13900139000", "from node A", photo)
	if len(d.Media) != 1 || d.Media[0].Id != up.ID || d.Media[0].Size != uint64(len(photo)) {
		t.Fatalf("deliver on B %v", d)
	}
	var got bytes.Buffer
	if _, _, err := bob.api.DownloadMedia(context.Background(), bob.token, up.ID, false, 0, &got); err != nil || !bytes.Equal(got.Bytes(), photo) {
		t.Fatalf("download from node B: %v", err)
	}
}

// `phone send --media` uploads and sends a file; `phone listen` saves what
// arrives in --media-dir.
func TestPhoneSendMediaAndListenSaves(t *testing.T) {
	m := startMain(t, testConfig(t))
	dir := t.TempDir()
	alice, bob := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json")
	for _, r := range []struct{ state, number string }{{alice, "13600136000"}, {bob, "13500135000"}} {
		if out, err := phoneRun(t, m, r.state, "", "register", r.number, "--method", "header"); err != nil {
			t.Fatalf("register: %v\n%s", err, out)
		}
	}
	photo := e2eJPEG(t, 64, 64)
	file := filepath.Join(dir, "cat.jpg")
	os.WriteFile(file, photo, 0o600)
	out, err := phoneRun(t, m, alice, "", "send", "13500135000", "my", "cat", "--media", file, "--wait", "0s")
	if err != nil || !strings.Contains(out, "uploaded "+file+": image/jpeg") || !strings.Contains(out, "-> 13500135000: stored") {
		t.Fatalf("send --media: %v\n%s", err, out)
	}
	// Without a file or a text there is nothing to send.
	if _, err := phoneRun(t, m, alice, "", "send", "13500135000"); exitCode(err) != 1 {
		t.Fatalf("send with neither: %v", err)
	}
	saved := filepath.Join(dir, "received")
	out, err = phoneRun(t, m, bob, "", "listen", "--wait", "1s", "--media-dir", saved)
	if err != nil || !strings.Contains(out, "my cat") || !strings.Contains(out, "saved to "+saved) {
		t.Fatalf("listen: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(saved, "*-cat.jpg"))
	if len(files) != 1 {
		t.Fatalf("saved files %v", files)
	}
	if b, _ := os.ReadFile(files[0]); !bytes.Equal(b, photo) {
		t.Fatal("the saved file is not the photo sent")
	}
}
