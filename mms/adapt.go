package mms

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // decoders for adaptation
	"image/jpeg"
	_ "image/png"
	"math"
	"strings"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // decodes WebP for adaptation
)

// Part is one media object of an MMS before it goes to the MMSC.
type Part struct {
	ContentType string
	Name        string // a file name for Content-Location, e.g. "photo.jpg"
	Data        []byte
}

// ErrCannotAdapt is returned by Adapt for content that cannot be made to
// fit the link's size limit: a video or audio clip that is too large, an
// image that cannot be read or that stays too large however small it is
// made. The message then goes as an SMS with a link.
var ErrCannotAdapt = errors.New("mms: content cannot be adapted to the MMSC's size limit")

// Limits on what Adapt does.
const (
	// envelopeReserve is what the SOAP envelope, the MIME headers and the
	// SMIL presentation take out of the link's limit.
	envelopeReserve = 4 << 10
	// maxPixels refuses to decode images larger than this (a decompression
	// bomb: a few KiB of PNG can claim gigapixels).
	maxPixels = 50 << 20
	// minSide is the smallest side an image is scaled to before Adapt
	// gives up.
	minSide = 64
)

// jpegQualities are tried in order at each size, best first.
var jpegQualities = []int{85, 70, 55, 40}

// Adapt makes parts fit in limit bytes (the link's max_message_bytes,
// caption and overhead included): when they are larger, every image is
// scaled down and recompressed as JPEG until the whole fits; other content
// is left as it is. It returns the parts to send (the input itself when
// they fit) or ErrCannotAdapt.
func Adapt(parts []Part, caption string, limit int) ([]Part, error) {
	total := envelopeReserve + len(caption)
	imageBytes := 0
	for _, p := range parts {
		total += len(p.Data)
		if isAdaptableImage(p.ContentType) {
			imageBytes += len(p.Data)
		}
	}
	if total <= limit {
		return parts, nil
	}
	rest := total - imageBytes // what adaptation cannot shrink
	budget := limit - rest
	if imageBytes == 0 || budget <= 0 {
		return nil, fmt.Errorf("%w: %d bytes of content that is not an image, %d allowed", ErrCannotAdapt, rest, limit)
	}
	out := make([]Part, len(parts))
	copy(out, parts)
	for i, p := range parts {
		if !isAdaptableImage(p.ContentType) {
			continue
		}
		// Each image gets a share of the budget in proportion to its size.
		share := int(int64(budget) * int64(len(p.Data)) / int64(imageBytes))
		if len(p.Data) <= share {
			continue
		}
		data, err := shrinkImage(p.Data, share)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCannotAdapt, p.displayName(), err)
		}
		out[i] = Part{ContentType: "image/jpeg", Name: jpegName(p.Name), Data: data}
	}
	return out, nil
}

func (p Part) displayName() string {
	if p.Name != "" {
		return p.Name
	}
	return p.ContentType
}

func isAdaptableImage(ct string) bool {
	switch strings.ToLower(strings.TrimSpace(strings.Split(ct, ";")[0])) {
	case "image/jpeg", "image/png", "image/gif", "image/webp":
		return true
	}
	return false
}

// jpegName gives a file name the .jpg extension of its new content.
func jpegName(name string) string {
	if name == "" {
		return ""
	}
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		name = name[:i]
	}
	return name + ".jpg"
}

// shrinkImage re-encodes an image as a JPEG of at most max bytes: first at
// its own size (recompression alone often suffices), then scaled down step
// by step, keeping its aspect ratio.
func shrinkImage(data []byte, max int) ([]byte, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("unreadable image: %v", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, fmt.Errorf("image of %dx%d pixels is too large to adapt", cfg.Width, cfg.Height)
	}
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("unreadable image: %v", err)
	}
	src = flatten(src)
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	// A first guess at the scale from the bytes per pixel of a JPEG at
	// medium quality (~0.25), so that a 12-megapixel photo does not go
	// through every size.
	if guess := float64(max) / 0.25; float64(w*h) > guess {
		f := math.Sqrt(guess / float64(w*h))
		w, h = max1(int(float64(w)*f)), max1(int(float64(h)*f))
	}
	var buf bytes.Buffer
	for {
		img := src
		if w != b.Dx() || h != b.Dy() {
			dst := image.NewRGBA(image.Rect(0, 0, w, h))
			draw.CatmullRom.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
			img = dst
		}
		for _, q := range jpegQualities {
			buf.Reset()
			if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
				return nil, err
			}
			if buf.Len() <= max {
				return bytes.Clone(buf.Bytes()), nil
			}
		}
		if w <= minSide || h <= minSide {
			return nil, fmt.Errorf("still %d bytes at %dx%d pixels, %d allowed", buf.Len(), w, h, max)
		}
		// Down by the square root of how far off the last try was, at
		// least 10% per step.
		f := min(math.Sqrt(float64(max)/float64(buf.Len())), 0.9)
		w, h = max1(int(float64(w)*f)), max1(int(float64(h)*f))
	}
}

// flatten draws images with transparency over white (JPEG has no alpha)
// and takes the first frame of an animation.
func flatten(img image.Image) image.Image {
	switch img.(type) {
	case *image.YCbCr, *image.Gray:
		return img
	}
	b := img.Bounds()
	dst := image.NewRGBA(b)
	draw.Draw(dst, b, &image.Uniform{C: color.White}, image.Point{}, draw.Src)
	draw.Draw(dst, b, img, b.Min, draw.Over)
	return dst
}

func max1(v int) int { return max(v, 1) }
