package smscsim

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestEncodeMO(t *testing.T) {
	for _, tc := range []struct {
		name  string
		text  string
		dc    uint8
		parts int
	}{
		{"short gsm", "hello", 0, 1},
		{"160 gsm", strings.Repeat("a", 160), 0, 1},
		{"escape on the cut", strings.Repeat("a", 152) + "€" + strings.Repeat("b", 10), 0, 2},
		{"short ucs2", "你好", 8, 1},
		{"surrogate on the cut", strings.Repeat("你", 66) + "😀" + strings.Repeat("好", 10), 8, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc, parts, err := encodeMO(tc.text, 7)
			if err != nil {
				t.Fatal(err)
			}
			if dc != tc.dc || len(parts) != tc.parts {
				t.Fatalf("dc %d, %d parts; want %d, %d", dc, len(parts), tc.dc, tc.parts)
			}
			var all []byte
			for i, p := range parts {
				body := p
				if len(parts) > 1 {
					if !bytes.Equal(p[:6], []byte{5, 0, 3, 7, byte(len(parts)), byte(i + 1)}) {
						t.Fatalf("part %d UDH % x", i, p[:6])
					}
					body = p[6:]
				}
				if len(p) > 140 && dc == 8 || len(body) > 160 {
					t.Fatalf("part %d is %d octets", i, len(p))
				}
				last := body[len(body)-1]
				if dc == 0 && last == 0x1B {
					t.Fatalf("part %d ends with an escape", i)
				}
				if hi := binary.BigEndian.Uint16(body[len(body)-2:]); dc == 8 && hi >= 0xD800 && hi <= 0xDBFF {
					t.Fatalf("part %d ends with a high surrogate", i)
				}
				all = append(all, body...)
			}
			if got := decodeText(dc, all); got != tc.text {
				t.Fatalf("reassembled %q", got)
			}
		})
	}
	if _, _, err := encodeMO(strings.Repeat("😀", 10000), 1); err == nil {
		t.Fatal("no error for a text over 255 parts")
	}
}

func TestConcat(t *testing.T) {
	for name, tc := range map[string]struct {
		esm        uint8
		b          []byte
		ref        uint16
		total, seq uint8
		ok         bool
	}{
		"8-bit":     {0x40, []byte{5, 0, 3, 9, 2, 1, 'a'}, 9, 2, 1, true},
		"16-bit":    {0x40, []byte{6, 8, 4, 1, 2, 3, 1, 'a'}, 0x0102, 3, 1, true},
		"no udhi":   {0, []byte{5, 0, 3, 9, 2, 1}, 0, 0, 0, false},
		"truncated": {0x40, []byte{5, 0, 3}, 0, 0, 0, false},
		"bad ie":    {0x40, []byte{3, 0, 9, 1}, 0, 0, 0, false},
	} {
		ref, total, seq, ok := concat(tc.esm, tc.b)
		if ref != tc.ref || total != tc.total || seq != tc.seq || ok != tc.ok {
			t.Errorf("%s: %d %d %d %v", name, ref, total, seq, ok)
		}
	}
}
