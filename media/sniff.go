package media

import (
	"bytes"
	"unicode/utf8"

	"github.com/phonebook/phonebook"
)

// AllowedTypes are the media types an upload may be, as Sniff names them.
var AllowedTypes = []string{
	"image/jpeg", "image/png", "image/gif",
	"audio/amr", "audio/mp4",
	"video/3gpp", "video/mp4",
	"text/vcard",
}

// Sniff names the type of data from its first bytes (magic numbers), one
// of AllowedTypes, or fails with EMediaType. What the client says the type
// is does not count: net/http's DetectContentType knows neither AMR nor
// the ISO media family's brands nor vCard, so the signatures are here.
func Sniff(data []byte) (string, error) {
	switch {
	case bytes.HasPrefix(data, []byte{0xFF, 0xD8, 0xFF}):
		return "image/jpeg", nil
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return "image/png", nil
	case bytes.HasPrefix(data, []byte("GIF87a")), bytes.HasPrefix(data, []byte("GIF89a")):
		return "image/gif", nil
	case bytes.HasPrefix(data, []byte("#!AMR\n")):
		return "audio/amr", nil
	}
	if t := isoMedia(data); t != "" {
		return t, nil
	}
	if isVCard(data) {
		return "text/vcard", nil
	}
	return "", phonebook.Errorf(phonebook.EMediaType,
		"the upload is none of the allowed types (JPEG, PNG, GIF, AMR, MP4 audio or video, 3GPP, vCard), judged by its bytes")
}

// isoMedia recognises the ISO base media file format (MP4, 3GPP): a first
// box "ftyp" whose major brand, or else one of its compatible brands,
// says which.
func isoMedia(data []byte) string {
	if len(data) < 16 || string(data[4:8]) != "ftyp" {
		return ""
	}
	size := int(data[0])<<24 | int(data[1])<<16 | int(data[2])<<8 | int(data[3])
	if size < 16 || size > len(data) || size > 4096 || (size-16)%4 != 0 {
		return ""
	}
	if t := isoBrand(string(data[8:12])); t != "" {
		return t
	}
	for i := 16; i+4 <= size; i += 4 {
		if t := isoBrand(string(data[i : i+4])); t != "" {
			return t
		}
	}
	return ""
}

func isoBrand(b string) string {
	switch {
	case len(b) == 4 && (b[:3] == "3gp" || b[:3] == "3g2" || b[:3] == "3gs" || b[:3] == "3gr" || b[:3] == "3ge"):
		return "video/3gpp"
	case b == "M4A " || b == "M4B " || b == "F4A " || b == "F4B ":
		return "audio/mp4"
	case b == "isom" || b == "iso2" || b == "iso4" || b == "iso5" || b == "iso6" || b == "mp41" || b == "mp42" ||
		b == "avc1" || b == "M4V " || b == "M4VH" || b == "M4VP" || b == "F4V " || b == "dash" || b == "mp71" || b == "MSNV":
		return "video/mp4"
	}
	return ""
}

// isVCard: UTF-8 text (a byte-order mark and blank lines allowed first)
// that begins with BEGIN:VCARD and holds END:VCARD.
func isVCard(data []byte) bool {
	if !utf8.Valid(data) {
		return false
	}
	t := bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	t = bytes.TrimLeft(t, " \t\r\n")
	return len(t) >= 11 && bytes.EqualFold(t[:11], []byte("BEGIN:VCARD")) &&
		bytes.Contains(bytes.ToUpper(t), []byte("END:VCARD"))
}

func isImage(ct string) bool {
	return ct == "image/jpeg" || ct == "image/png" || ct == "image/gif"
}
