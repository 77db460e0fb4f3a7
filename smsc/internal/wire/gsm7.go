package wire

import "github.com/phonebook/phonebook"

// The GSM 03.38 default alphabet, unpacked (one septet per byte), as the
// link sends it and the simulator reads it (and the other way for MO).
// go-smpp has a codec too (pdutext.GSM7), but this one is kept: it reports
// where each character ends, so the link splits a long text without
// cutting an escape pair; it refuses bytes that are not septets instead of
// guessing; and with one codec the simulator reads exactly what the link
// wrote, so a wrong table entry cannot hide in a test that passes.

// Esc is the GSM 03.38 escape to the extension table.
const Esc = 0x1B

// AppendGSM7 appends r's septets (one, or Esc and one from the extension
// table) to dst; ok is false when r is not in the GSM 03.38 alphabet.
func AppendGSM7(dst []byte, r rune) (_ []byte, ok bool) {
	if b, ok := gsmBasicRev[r]; ok {
		return append(dst, b), true
	}
	if b, ok := gsmExtRev[r]; ok {
		return append(dst, Esc, b), true
	}
	return dst, false
}

// EncodeGSM7 encodes text in the GSM 03.38 alphabet; ok is false when a
// character is not in it.
func EncodeGSM7(text string) (_ []byte, ok bool) {
	b := make([]byte, 0, len(text))
	for _, r := range text {
		if b, ok = AppendGSM7(b, r); !ok {
			return nil, false
		}
	}
	return b, true
}

// DecodeGSM7 decodes unpacked septets. A byte over 0x7F is an EInvalid
// error; an escape with nothing (or another escape) after it shows as a
// space, an unknown extension as the default-table character (03.38).
func DecodeGSM7(b []byte) (string, error) {
	rs := make([]rune, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c > 0x7F {
			return "", phonebook.Errorf(phonebook.EInvalid, "sms in GSM 03.38 (data_coding 0) holds byte 0x%02X, not a septet", c)
		}
		if c == Esc {
			if i+1 == len(b) {
				rs = append(rs, ' ') // a dangling escape shows as a space
				continue
			}
			i++
			n := b[i]
			if n > 0x7F {
				return "", phonebook.Errorf(phonebook.EInvalid, "sms in GSM 03.38 holds byte 0x%02X after an escape", n)
			}
			if r, ok := gsmExt[n]; ok {
				rs = append(rs, r)
			} else if n == Esc {
				rs = append(rs, ' ')
			} else {
				rs = append(rs, gsmBasic[n])
			}
			continue
		}
		rs = append(rs, gsmBasic[c])
	}
	return string(rs), nil
}

// gsmBasic is the GSM 03.38 default alphabet; 0x1B is the escape to gsmExt.
var gsmBasic = [128]rune{
	'@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å',
	'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', 0x1B, 'Æ', 'æ', 'ß', 'É',
	' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/',
	'0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?',
	'¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O',
	'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§',
	'¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o',
	'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à',
}

// gsmExt is the extension table reached by 0x1B.
var gsmExt = map[byte]rune{
	0x0A: '\f', 0x14: '^', 0x28: '{', 0x29: '}', 0x2F: '\\',
	0x3C: '[', 0x3D: '~', 0x3E: ']', 0x40: '|', 0x65: '€',
}

var gsmBasicRev, gsmExtRev = func() (map[rune]byte, map[rune]byte) {
	basic := make(map[rune]byte, 128)
	for i, r := range gsmBasic {
		if i != Esc {
			basic[r] = byte(i)
		}
	}
	ext := make(map[rune]byte, len(gsmExt))
	for b, r := range gsmExt {
		ext[r] = b
	}
	return basic, ext
}()

// GSM7Alphabet is every character of the default alphabet and the
// extension table, for tests of the codec's users.
func GSM7Alphabet() string {
	rs := make([]rune, 0, 128+len(gsmExt))
	for i, r := range gsmBasic {
		if i != Esc {
			rs = append(rs, r)
		}
	}
	for i := range 128 {
		if r, ok := gsmExt[byte(i)]; ok {
			rs = append(rs, r)
		}
	}
	return string(rs)
}
