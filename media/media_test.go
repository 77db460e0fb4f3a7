package media_test

import (
	"bytes"
	"context"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

const (
	alice = phonebook.MSISDN("+8613800138000")
	bob   = phonebook.MSISDN("+8613900139000")
	carol = phonebook.MSISDN("+8613700137000")
)

// JPEG returns a w x h JPEG.
func JPEG(t testing.TB, w, h int) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, gradient(w, h), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gradient(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	return img
}

func newService(t *testing.T, db *store.DB, cfg media.Config) *media.Service {
	t.Helper()
	blobs, err := media.NewDirBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := media.New(cfg, db, blobs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, r io.ReadCloser) []byte {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUploadAttachRead(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		s := newService(t, db, media.Config{})
		photo := JPEG(t, 640, 480)
		info, err := s.Upload(ctx, alice, "", `C:\Photos\beach.jpg`, bytes.NewReader(photo))
		if err != nil {
			t.Fatal(err)
		}
		if !media.ValidID(info.ID) || info.ContentType != "image/jpeg" || info.Size != int64(len(photo)) ||
			info.Width != 640 || info.Height != 480 || !info.Thumbnail || info.Name != "beach.jpg" || info.Owner != alice {
			t.Fatalf("info %+v", info)
		}
		// The uploader may read it; nobody else, until a message carries it.
		r, _, err := s.OpenFor(ctx, info.ID, alice, false)
		if err != nil || !bytes.Equal(readAll(t, r), photo) {
			t.Fatalf("uploader reads: %v", err)
		}
		if _, _, err := s.OpenFor(ctx, info.ID, bob, false); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("bob before the message: %v", err)
		}
		// Only the uploader may send it.
		if _, err := s.Attach(ctx, "m-bob", bob, carol, []string{info.ID}); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("bob attaches alice's upload: %v", err)
		}
		refs, err := s.Attach(ctx, "m1", alice, bob, []string{info.ID})
		if err != nil || len(refs) != 1 || refs[0].Id != info.ID || refs[0].ContentType != "image/jpeg" ||
			refs[0].Size != uint64(len(photo)) || refs[0].Width != 640 || !refs[0].Thumbnail {
			t.Fatalf("attach: %v %v", refs, err)
		}
		r, _, err = s.OpenFor(ctx, info.ID, bob, false)
		if err != nil || !bytes.Equal(readAll(t, r), photo) {
			t.Fatalf("recipient reads: %v", err)
		}
		r, _, err = s.OpenFor(ctx, info.ID, bob, true)
		if err != nil {
			t.Fatal(err)
		}
		thumb, err := jpeg.Decode(r)
		r.Close()
		if err != nil || thumb.Bounds().Dx() != 160 || thumb.Bounds().Dy() != 120 {
			t.Fatalf("thumbnail %v %v", thumb.Bounds(), err)
		}
		if _, _, err := s.OpenFor(ctx, info.ID, carol, false); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("carol: %v", err)
		}
		// Server side (the MMS outbox) reads without a reader.
		r, got, err := s.Open(ctx, info.ID)
		if err != nil || got.ID != info.ID || !bytes.Equal(readAll(t, r), photo) {
			t.Fatalf("open: %+v %v", got, err)
		}
	})
}

func TestSniff(t *testing.T) {
	var pngb, gifb bytes.Buffer
	png.Encode(&pngb, gradient(4, 4))
	gif.Encode(&gifb, gradient(4, 4), nil)
	ftyp := func(major string, compat ...string) []byte {
		b := []byte{0, 0, 0, byte(16 + 4*len(compat))}
		b = append(b, "ftyp"+major+"\x00\x00\x00\x00"...)
		for _, c := range compat {
			b = append(b, c...)
		}
		return append(b, "\x00\x00\x00\x08free"...)
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"jpeg", JPEG(t, 2, 2), "image/jpeg"},
		{"png", pngb.Bytes(), "image/png"},
		{"gif", gifb.Bytes(), "image/gif"},
		{"amr", []byte("#!AMR\n\x3c\x48\xf5\x1f"), "audio/amr"},
		{"3gpp", ftyp("3gp5", "3gp5", "isom"), "video/3gpp"},
		{"m4a", ftyp("M4A ", "M4A ", "mp42", "isom"), "audio/mp4"},
		{"mp4", ftyp("isom", "isom", "iso2", "avc1", "mp41"), "video/mp4"},
		{"mp4 by compatible brand", ftyp("xxxx", "mp42"), "video/mp4"},
		{"vcard", []byte("\xef\xbb\xbf\r\nBEGIN:VCARD\r\nVERSION:3.0\r\nFN:Bob\r\nTEL:+8613900139000\r\nEND:VCARD\r\n"), "text/vcard"},
		{"html", []byte("<html><script>alert(1)</script></html>"), ""},
		{"exe", []byte("MZ\x90\x00\x03"), ""},
		{"text", []byte("hello"), ""},
		{"unknown brand", ftyp("qt  ", "qt  "), ""},
		{"ftyp box too short", []byte("\x00\x00\x00\x04ftypisom\x00\x00\x00\x00"), ""},
		{"vcard without end", []byte("BEGIN:VCARD\r\nFN:x\r\n"), ""},
		{"vcard not utf-8", []byte("BEGIN:VCARD\r\nFN:\xff\r\nEND:VCARD"), ""},
		{"empty", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := media.Sniff(c.data)
			if c.want == "" {
				if phonebook.ErrorCode(err) != phonebook.EMediaType {
					t.Fatalf("Sniff = %q, %v; want unsupported_media_type", got, err)
				}
				return
			}
			if got != c.want || err != nil {
				t.Fatalf("Sniff = %q, %v; want %s", got, err, c.want)
			}
		})
	}
}

func TestUploadRefusesBadInput(t *testing.T) {
	db := storetest.SQLite(t)
	s := newService(t, db, media.Config{MaxBytes: 64 << 10})
	ctx := context.Background()
	bomb := func() []byte { // a small PNG that claims 50000 x 50000 pixels
		var b bytes.Buffer
		png.Encode(&b, gradient(1, 1))
		p := b.Bytes()
		copy(p[16:24], []byte{0, 0, 0xc3, 0x50, 0, 0, 0xc3, 0x50})
		return p
	}()
	for _, c := range []struct {
		name string
		body []byte
		code phonebook.Code
	}{
		{"empty", nil, phonebook.EInvalid},
		{"too large", append(JPEG(t, 8, 8), make([]byte, 64<<10)...), phonebook.ETooLarge},
		{"html", []byte("<html></html>"), phonebook.EMediaType},
		{"truncated jpeg", JPEG(t, 64, 64)[:40], phonebook.EInvalid},
		{"pixel bomb", bomb, phonebook.EInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.Upload(ctx, alice, "", "x", bytes.NewReader(c.body))
			if phonebook.ErrorCode(err) != c.code {
				t.Fatalf("err %v, want %s", err, c.code)
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		clock := time.Now().UTC()
		cfg := media.Config{UnsentTTL: time.Hour, Retention: 24 * time.Hour, LinkTTL: 48 * time.Hour}
		s := newService(t, db, cfg)
		media.SetClock(s, func() time.Time { return clock })
		unsent, err := s.Upload(ctx, alice, "", "", bytes.NewReader(JPEG(t, 8, 8)))
		if err != nil {
			t.Fatal(err)
		}
		sent, _ := s.Upload(ctx, alice, "", "", bytes.NewReader(JPEG(t, 8, 8)))
		linked, _ := s.Upload(ctx, alice, "", "", bytes.NewReader(JPEG(t, 8, 8)))
		if _, err := s.Attach(ctx, "m1", alice, bob, []string{sent.ID}); err != nil {
			t.Fatal(err)
		}
		url, err := s.Link(ctx, "m2", carol, []string{linked.ID}, 0)
		if err != nil || !strings.HasPrefix(url, "http://127.0.0.1:8080/m/") || len(url) != len("http://127.0.0.1:8080/m/")+20 {
			t.Fatalf("link %q %v", url, err)
		}
		tok := strings.TrimPrefix(url, "http://127.0.0.1:8080/m/")
		// After an hour the unsent upload goes; the sent one stays.
		clock = clock.Add(time.Hour + time.Second)
		if n, err := s.Expire(ctx, 100); err != nil || n != 1 {
			t.Fatalf("expire after 1h: %d %v", n, err)
		}
		if _, err := s.Info(ctx, unsent.ID); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("unsent after expiry: %v", err)
		}
		if _, err := s.Attach(ctx, "m3", alice, bob, []string{unsent.ID}); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("attach an expired upload: %v", err)
		}
		if err := s.Readable(ctx, sent.ID, bob); err != nil {
			t.Fatal(err)
		}
		// After the retention the sent one goes too; the link keeps its own.
		clock = clock.Add(24 * time.Hour)
		if n, err := s.Expire(ctx, 100); err != nil || n != 1 {
			t.Fatalf("expire after the retention: %d %v", n, err)
		}
		if err := s.Readable(ctx, sent.ID, bob); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("bob after the retention: %v", err)
		}
		if infos, _, err := s.ResolveLink(ctx, tok); err != nil || len(infos) != 1 || infos[0].ID != linked.ID {
			t.Fatalf("link before it expires: %v %v", infos, err)
		}
		clock = clock.Add(24 * time.Hour)
		if _, _, err := s.ResolveLink(ctx, tok); phonebook.ErrorCode(err) != phonebook.EExpired {
			t.Fatalf("link after it expired: %v", err)
		}
		if n, err := s.Expire(ctx, 100); err != nil || n != 1 {
			t.Fatalf("expire after the link: %d %v", n, err)
		}
		if _, _, err := s.ResolveLink(ctx, tok); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("link after the janitor: %v", err)
		}
		if _, _, err := s.OpenLink(ctx, "aaaaaaaaaaaaaaaaaaaa", 0, false); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("a guessed link: %v", err)
		}
	})
}
