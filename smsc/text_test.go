package smsc

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/phonebook/phonebook"
)

// joinParts checks the UDH of every part and decodes the concatenation the
// way a handset does.
func joinParts(t testing.TB, parts []Part) string {
	t.Helper()
	var body []byte
	for i, p := range parts {
		d, err := Decode(p.DataCoding, p.Payload, p.ESMClass&0x40 != 0)
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		if len(parts) > 1 {
			if d.Concat == nil || int(d.Concat.Seq) != i+1 || int(d.Concat.Total) != len(parts) || d.Concat.Ref != uint16(parts[0].Payload[3]) {
				t.Fatalf("part %d: concat %+v, want seq %d of %d", i+1, d.Concat, i+1, len(parts))
			}
		}
		body = append(body, d.Body...)
	}
	s, err := DecodeText(parts[0].DataCoding, body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// maxPayload is 140 octets, which holds 160 septets packed; SMPP carries
// GSM text unpacked, one septet per octet.
func maxPayload(coding uint8) int {
	if coding == CodingGSM7 {
		return 160
	}
	return 140
}

func TestEncodeParts(t *testing.T) {
	chinese := strings.Repeat("你好世界😀", 60) // 300 characters, 60 of them emoji
	tests := []struct {
		name   string
		text   string
		coding uint8
		parts  int
		units  int
	}{
		{"ascii", "Your code is 123456", CodingGSM7, 1, 19},
		{"gsm accents", "Çà và? ¿Ñ Δ£", CodingGSM7, 1, 12},
		{"extension chars count two", "{[~€]}", CodingGSM7, 1, 12},
		{"160 septets fit one", strings.Repeat("a", 160), CodingGSM7, 1, 160},
		{"161 septets need two", strings.Repeat("a", 161), CodingGSM7, 2, 161},
		{"306 septets are two", strings.Repeat("a", 306), CodingGSM7, 2, 306},
		{"307 septets are three", strings.Repeat("a", 307), CodingGSM7, 3, 307},
		{"80 euros are 160 septets", strings.Repeat("€", 80), CodingGSM7, 1, 160},
		{"chinese", "你好", CodingUCS2, 1, 2},
		{"emoji is two units", "😀", CodingUCS2, 1, 2},
		{"70 units fit one", strings.Repeat("中", 70), CodingUCS2, 1, 70},
		{"71 units need two", strings.Repeat("中", 71), CodingUCS2, 2, 71},
		{"134 units are two", strings.Repeat("中", 134), CodingUCS2, 2, 134},
		{"one non-GSM char makes UCS-2", "hello ç", CodingUCS2, 1, 7},
		{"latin ç upper is gsm, â is not", "â", CodingUCS2, 1, 1},
		{"300 chinese with emoji", chinese, CodingUCS2, 6, 360},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Encode(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if e.DataCoding != tt.coding || e.Units() != tt.units {
				t.Fatalf("coding %d units %d, want %d %d", e.DataCoding, e.Units(), tt.coding, tt.units)
			}
			parts, err := e.Parts(0x7A, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) != tt.parts {
				t.Fatalf("%d parts, want %d", len(parts), tt.parts)
			}
			for i, p := range parts {
				if len(p.Payload) > maxPayload(p.DataCoding) {
					t.Fatalf("part %d is %d octets", i+1, len(p.Payload))
				}
				if len(parts) == 1 && p.ESMClass != 0 || len(parts) > 1 && !bytes.HasPrefix(p.Payload, []byte{5, 0, 3, 0x7A, byte(len(parts)), byte(i + 1)}) {
					t.Fatalf("part %d header % X esm %#x", i+1, p.Payload[:6], p.ESMClass)
				}
			}
			if got := joinParts(t, parts); got != tt.text {
				t.Fatalf("round trip: got %q want %q", got, tt.text)
			}
		})
	}
}

// An escape pair or a surrogate pair that would straddle a part boundary moves
// whole into the next part.
func TestSplitNeverCutsPairs(t *testing.T) {
	gsm := strings.Repeat("a", 152) + "€" + strings.Repeat("b", 10)
	e, _ := Encode(gsm)
	parts, err := e.Parts(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || len(parts[0].Payload) != 6+152 || !bytes.HasPrefix(parts[1].Payload[6:], []byte{0x1B, 0x65}) {
		t.Fatalf("escape pair split: part sizes %d/%d", len(parts[0].Payload), len(parts[1].Payload))
	}
	if got := joinParts(t, parts); got != gsm {
		t.Fatalf("got %q", got)
	}

	ucs := strings.Repeat("中", 66) + "😀" + "尾尾尾"
	e, _ = Encode(ucs)
	parts, err = e.Parts(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 2 || len(parts[0].Payload) != 6+132 {
		t.Fatalf("surrogate pair split: part sizes %d/%d", len(parts[0].Payload), len(parts[1].Payload))
	}
	if got := joinParts(t, parts); got != ucs {
		t.Fatalf("got %q", got)
	}
	// Each part on its own decodes to whole characters.
	for i, p := range parts {
		d, err := Decode(p.DataCoding, p.Payload, true)
		if err != nil || strings.ContainsRune(d.Text, utf8.RuneError) {
			t.Fatalf("part %d decodes alone to %q, %v", i+1, d.Text, err)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		text string
		max  int
		code phonebook.Code
	}{
		"invalid utf8": {"abc\xff", 10, phonebook.EInvalid},
		"empty":        {"", 10, phonebook.EInvalid},
		"too many gsm": {strings.Repeat("x", 153*3+1), 3, phonebook.ETooLarge},
		"too many ucs": {strings.Repeat("中", 67*2+1), 2, phonebook.ETooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := Encode(tc.text)
			if err == nil {
				_, err = e.Parts(0, tc.max)
			}
			if phonebook.ErrorCode(err) != tc.code {
				t.Fatalf("error %v, want code %s", err, tc.code)
			}
		})
	}
	// Exactly at the cap is fine.
	e, _ := Encode(strings.Repeat("x", 153*3))
	if p, err := e.Parts(0, 3); err != nil || len(p) != 3 {
		t.Fatalf("%d parts, %v", len(p), err)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name    string
		coding  uint8
		payload []byte
		udh     bool
		text    string
		concat  *Concat
		err     bool
	}{
		{"gsm", 0, []byte{0x48, 0x69, 0x20, 0x1B, 0x65, 0x00, 0x11}, false, "Hi €@_", nil, false},
		{"gsm unknown escape shows base char", 0, []byte{0x1B, 0x41}, false, "A", nil, false},
		{"gsm high byte", 0, []byte{0x48, 0xC8}, false, "", nil, true},
		{"latin1", 3, []byte{'c', 0xE7, 'a'}, false, "cça", nil, false},
		{"ascii", 1, []byte("ID abc"), false, "ID abc", nil, false},
		{"ucs2 surrogate", 8, []byte{0xD8, 0x3D, 0xDE, 0x00, 0x4E, 0x2D}, false, "😀中", nil, false},
		{"ucs2 odd", 8, []byte{0x4E}, false, "", nil, true},
		{"binary refused", 4, []byte{1, 2}, false, "", nil, true},
		{"binary 2 refused", 2, []byte{1, 2}, false, "", nil, true},
		{"unknown coding", 0xF5, []byte{1}, false, "", nil, true},
		{"udh 8-bit ref", 0, []byte{5, 0, 3, 0xAB, 2, 1, 'h', 'i'}, true, "hi", &Concat{Ref: 0xAB, Total: 2, Seq: 1}, false},
		{"udh 16-bit ref", 0, []byte{6, 8, 4, 0x12, 0x34, 3, 3, 'x'}, true, "x", &Concat{Ref: 0x1234, Total: 3, Seq: 3}, false},
		{"udh other ie ignored", 0, []byte{3, 0x24, 1, 1, 'x'}, true, "x", nil, false},
		{"udh too long", 0, []byte{9, 0, 3}, true, "", nil, true},
		{"udh truncated ie", 0, []byte{2, 0, 3, 'x'}, true, "", nil, true},
		{"udh seq zero", 0, []byte{5, 0, 3, 1, 2, 0, 'x'}, true, "", nil, true},
		{"udh empty payload", 0, nil, true, "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := Decode(tt.coding, tt.payload, tt.udh)
			if (err != nil) != tt.err {
				t.Fatalf("err %v, want error %v", err, tt.err)
			}
			if err != nil {
				if phonebook.ErrorCode(err) != phonebook.EInvalid {
					t.Fatalf("error %v has no EInvalid code", err)
				}
				return
			}
			if d.Text != tt.text {
				t.Fatalf("text %q want %q", d.Text, tt.text)
			}
			if (d.Concat == nil) != (tt.concat == nil) || d.Concat != nil && *d.Concat != *tt.concat {
				t.Fatalf("concat %+v want %+v", d.Concat, tt.concat)
			}
		})
	}
}

func FuzzEncodeSplit(f *testing.F) {
	for _, s := range []string{"hello", "€€€", "你好😀", strings.Repeat("a€", 100), strings.Repeat("中😀", 80)} {
		f.Add(s, uint8(3))
	}
	f.Fuzz(func(t *testing.T, s string, max uint8) {
		e, err := Encode(s)
		if err != nil {
			if utf8.ValidString(s) && s != "" {
				t.Fatalf("valid text refused: %v", err)
			}
			return
		}
		parts, err := e.Parts(9, int(max))
		if err != nil {
			return
		}
		for _, p := range parts {
			if len(p.Payload) > maxPayload(p.DataCoding) {
				t.Fatalf("part of %d octets", len(p.Payload))
			}
		}
		if got := joinParts(t, parts); got != s {
			t.Fatalf("round trip %q -> %q", s, got)
		}
	})
}

func FuzzDecode(f *testing.F) {
	f.Add(uint8(0), []byte{5, 0, 3, 1, 2, 1, 'a'}, true)
	f.Add(uint8(8), []byte{0xD8, 0x3D}, false)
	f.Fuzz(func(t *testing.T, dc uint8, b []byte, udh bool) {
		d, err := Decode(dc, b, udh)
		if err == nil && len(d.Body) > len(b) {
			t.Fatal("body longer than payload")
		}
	})
}
