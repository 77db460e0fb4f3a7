package media

import (
	"bytes"
	"fmt"
	"image"
	_ "image/gif" // GIF for image.Decode
	"image/jpeg"
	"image/png"
	"runtime"

	"golang.org/x/image/draw"
)

// decoding holds a slot per image being decoded.
var decoding = make(chan struct{}, runtime.GOMAXPROCS(0))

// MaxPixels is the largest image (width x height) an upload may be: a few
// compressed bytes can claim an enormous picture, and decoding one would
// take gigabytes.
const MaxPixels = 40_000_000

// imageFacts decodes an image's size and makes its thumbnail: at most px
// on the longer side (a smaller image keeps its size), JPEG for a JPEG,
// PNG otherwise so that transparency survives. A GIF's is its first frame.
func imageFacts(data []byte, px int) (w, h int, thumb []byte, err error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return 0, 0, nil, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > MaxPixels {
		return 0, 0, nil, fmt.Errorf("%dx%d pixels is more than %d", cfg.Width, cfg.Height, MaxPixels)
	}
	// A decoded image takes up to 4 bytes a pixel: decoding one per core
	// at a time bounds that memory however many uploads arrive at once.
	decoding <- struct{}{}
	defer func() { <-decoding }()
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return 0, 0, nil, err
	}
	thumb, err = thumbnail(img, format, px)
	return cfg.Width, cfg.Height, thumb, err
}

func thumbnail(img image.Image, format string, px int) ([]byte, error) {
	b := img.Bounds()
	tw, th := b.Dx(), b.Dy()
	if tw > px || th > px {
		if tw >= th {
			tw, th = px, max(1, th*px/tw)
		} else {
			tw, th = max(1, tw*px/th), px
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, tw, th))
	draw.ApproxBiLinear.Scale(dst, dst.Bounds(), img, b, draw.Over, nil)
	var buf bytes.Buffer
	var err error
	if format == "jpeg" {
		err = jpeg.Encode(&buf, dst, &jpeg.Options{Quality: 75})
	} else {
		err = png.Encode(&buf, dst)
	}
	return buf.Bytes(), err
}

// ThumbnailType is the type of a medium's thumbnail.
func ThumbnailType(ct string) string {
	if ct == "image/jpeg" {
		return "image/jpeg"
	}
	return "image/png"
}
