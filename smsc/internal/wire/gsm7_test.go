package wire

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/phonebook/phonebook"
)

func TestGSM7RoundTripsTheWholeAlphabet(t *testing.T) {
	all := GSM7Alphabet()
	if n := utf8.RuneCountInString(all); n != 127+10 {
		t.Fatalf("alphabet has %d characters, want 127 basic + 10 extension", n)
	}
	b, ok := EncodeGSM7(all)
	if !ok || len(b) != 127+2*10 {
		t.Fatalf("encode: ok %v, %d septets", ok, len(b))
	}
	for _, c := range b {
		if c > 0x7F {
			t.Fatalf("septet 0x%02X", c)
		}
	}
	if got, err := DecodeGSM7(b); err != nil || got != all {
		t.Fatalf("decode = %q, %v", got, err)
	}
	for _, r := range "你😀ç`" {
		if _, ok := EncodeGSM7("a" + string(r)); ok {
			t.Errorf("%q encoded; it is not in GSM 03.38", r)
		}
	}
}

func TestDecodeGSM7Edges(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"dangling escape", []byte{'a', Esc}, "a "},
		{"escape escape", []byte{Esc, Esc, 'b'}, " b"},
		{"unknown extension", []byte{Esc, 'A'}, "A"},
		{"empty", nil, ""},
	} {
		if got, err := DecodeGSM7(tc.in); err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	for _, bad := range [][]byte{{0x80}, {'a', Esc, 0xFF}} {
		if _, err := DecodeGSM7(bad); phonebook.ErrorCode(err) != phonebook.EInvalid || !strings.Contains(err.Error(), "0x") {
			t.Errorf("DecodeGSM7(% x) = %v; want an invalid error naming the byte", bad, err)
		}
	}
}
