package media

import (
	"slices"
	"testing"

	"github.com/phonebook/phonebook"
)

// Uploads face the network: whatever the bytes, Sniff names an allowed type
// or refuses with unsupported_media_type, and an image's facts are found
// or refused, never a panic.
func FuzzSniffAndDecode(f *testing.F) {
	for _, seed := range [][]byte{
		[]byte("\xff\xd8\xff\xe0\x00\x10JFIF"), []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), []byte("GIF89a\x01\x00\x01\x00"),
		[]byte("#!AMR\n"), []byte("\x00\x00\x00\x18ftyp3gp5\x00\x00\x00\x00isom3gp5"), []byte("BEGIN:VCARD\r\nEND:VCARD"),
		[]byte("\x00\x00\x00\x10ftypM4A "),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ct, err := Sniff(data)
		if err != nil {
			if phonebook.ErrorCode(err) != phonebook.EMediaType {
				t.Fatalf("Sniff error %v", err)
			}
			return
		}
		if !slices.Contains(AllowedTypes, ct) {
			t.Fatalf("Sniff named %q", ct)
		}
		if isImage(ct) {
			w, h, thumb, err := imageFacts(data, 160)
			if err == nil && (w <= 0 || h <= 0 || w*h > MaxPixels || len(thumb) == 0) {
				t.Fatalf("image %dx%d, thumbnail %d bytes", w, h, len(thumb))
			}
		}
	})
}
