package mms

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"strings"
	"testing"
)

// photo makes a JPEG of w x h pixels that compresses like a photo with a
// lot of detail: smooth gradients with noise on top.
func photo(t testing.TB, w, h, quality int) []byte {
	t.Helper()
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	r := rand.New(rand.NewPCG(1, 2))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Y[y*img.YStride+x] = uint8((x*255/w+y*255/h)/2 + r.IntN(64))
		}
	}
	for i := range img.Cb {
		img.Cb[i], img.Cr[i] = uint8(96+r.IntN(64)), uint8(96+r.IntN(64))
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: quality}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The acceptance: a 3 MiB JPEG is adapted under 300 KiB.
func TestAdaptThreeMiBJPEG(t *testing.T) {
	big := photo(t, 1700, 1275, 100)
	if len(big) < 3<<20 {
		t.Fatalf("the test photo is %d bytes, want at least 3 MiB", len(big))
	}
	const limit = 300 << 10
	out, err := Adapt([]Part{{ContentType: "image/jpeg", Name: "IMG_0001.JPG", Data: big}}, "看 the view", limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].ContentType != "image/jpeg" || out[0].Name != "IMG_0001.jpg" {
		t.Fatalf("adapted parts %+v", out)
	}
	if n := len(out[0].Data) + envelopeReserve + len("看 the view"); n > limit {
		t.Fatalf("adapted message is %d bytes, over the %d limit", n, limit)
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(out[0].Data))
	if err != nil {
		t.Fatalf("adapted image does not decode: %v", err)
	}
	// The aspect ratio is kept (4:3), give or take a pixel of rounding.
	if d := cfg.Width*3 - cfg.Height*4; d < -4 || d > 4 || cfg.Width < 320 {
		t.Fatalf("adapted to %dx%d", cfg.Width, cfg.Height)
	}
	t.Logf("%d bytes at 1700x1275 -> %d bytes at %dx%d", len(big), len(out[0].Data), cfg.Width, cfg.Height)
}

func TestAdaptLeavesWhatFits(t *testing.T) {
	small := photo(t, 320, 240, 80)
	in := []Part{{ContentType: "image/jpeg", Data: small}, {ContentType: "audio/amr", Data: make([]byte, 1000)}}
	out, err := Adapt(in, "hi", 300<<10)
	if err != nil || len(out) != 2 || !bytes.Equal(out[0].Data, small) {
		t.Fatalf("a message under the limit was changed: %v", err)
	}
}

// A PNG with transparency becomes a JPEG over white; only the images
// shrink, the other parts stay.
func TestAdaptPNGAndOtherParts(t *testing.T) {
	img := image.NewNRGBA(image.Rect(0, 0, 700, 700))
	r := rand.New(rand.NewPCG(3, 4))
	for i := range img.Pix {
		img.Pix[i] = uint8(r.IntN(256))
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	audio := make([]byte, 20<<10)
	out, err := Adapt([]Part{{ContentType: "image/png", Name: "a.png", Data: buf.Bytes()}, {ContentType: "audio/amr", Data: audio}}, "", 200<<10)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].ContentType != "image/jpeg" || out[0].Name != "a.jpg" || !bytes.Equal(out[1].Data, audio) {
		t.Fatalf("parts %q %q", out[0].ContentType, out[0].Name)
	}
	if n := len(out[0].Data) + len(audio) + envelopeReserve; n > 200<<10 {
		t.Fatalf("%d bytes, over the limit", n)
	}
}

func TestAdaptRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parts []Part
		why   string
	}{
		{"video too large", []Part{{ContentType: "video/mp4", Data: make([]byte, 400<<10)}}, "not an image"},
		{"unreadable image", []Part{{ContentType: "image/jpeg", Data: bytes.Repeat([]byte{0xff}, 400<<10)}}, "unreadable image"},
		{"audio leaves no room", []Part{{ContentType: "image/jpeg", Data: photo(t, 200, 200, 90)}, {ContentType: "audio/amr", Data: make([]byte, 299<<10)}}, "not an image"},
		{"decompression bomb", []Part{{ContentType: "image/png", Data: bomb(t)}}, "20000x20000 pixels is too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Adapt(tc.parts, "", 300<<10)
			if !errors.Is(err, ErrCannotAdapt) || !strings.Contains(err.Error(), tc.why) {
				t.Fatalf("got %v, want ErrCannotAdapt: %s", err, tc.why)
			}
		})
	}
}

// bomb is a PNG whose header claims 20000x20000 pixels (a tiny image
// with its IHDR rewritten), padded over the limit so that Adapt must look
// at it.
func bomb(t *testing.T) []byte {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// 8-byte signature, then the IHDR chunk: length, "IHDR", width, height...
	binary.BigEndian.PutUint32(b[16:], 20000)
	binary.BigEndian.PutUint32(b[20:], 20000)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return append(b, make([]byte, 400<<10)...)
}

func BenchmarkAdaptThreeMiBJPEG(b *testing.B) {
	big := photo(b, 1700, 1275, 100)
	b.SetBytes(int64(len(big)))
	for b.Loop() {
		if _, err := Adapt([]Part{{ContentType: "image/jpeg", Data: big}}, "", 300<<10); err != nil {
			b.Fatal(err)
		}
	}
}
