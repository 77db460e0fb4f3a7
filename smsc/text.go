package smsc

import (
	"encoding/binary"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/smsc/internal/wire"
)

// Data codings this package produces and reads.
const (
	CodingGSM7   uint8 = 0 // GSM 03.38 default alphabet, one septet per byte (unpacked)
	CodingASCII  uint8 = 1 // IA5 / ASCII
	CodingBinary uint8 = 2 // 8-bit binary
	CodingLatin1 uint8 = 3 // ISO-8859-1
	CodingBin8   uint8 = 4 // 8-bit binary (GSM DCS class form)
	CodingUCS2   uint8 = 8 // UCS-2 big-endian; we send UTF-16 (surrogate pairs for emoji)
)

// Limits of one short message (140 octets) in characters of each coding, and
// what is left for text once a 6-byte concatenation UDH takes its share.
const (
	gsmSingle  = 160 // septets
	gsmPart    = 153 // septets after the UDH (6 octets = 7 septets when packed)
	ucs2Single = 140 // octets: 70 UTF-16 units
	ucs2Part   = 134 // octets: 67 UTF-16 units
	udhConcat8 = 6   // 05 00 03 ref total seq
)

// DefaultMaxParts caps how many parts one SMS may be split into.
const DefaultMaxParts = 10

// Encoded is a text in its SMPP coding, remembering where characters start so
// that splitting never cuts an escape pair or a surrogate pair in half.
type Encoded struct {
	DataCoding uint8
	Bytes      []byte // the whole text, no UDH
	// bounds[i] is the byte offset where character i+1 starts; a part may end
	// only at one of these offsets (or at len(Bytes)).
	bounds []int
}

// Units is the length in the coding's units: septets for GSM (an escaped
// character counts two), UTF-16 units for UCS-2.
func (e Encoded) Units() int {
	if e.DataCoding == CodingUCS2 {
		return len(e.Bytes) / 2
	}
	return len(e.Bytes)
}

// Encode encodes text in the GSM 03.38 default alphabet (with the extension
// table; the codec is smsc/internal/wire's, which the simulator shares) when
// every character fits, otherwise in UCS-2 (UTF-16 big-endian).
// Empty text and invalid UTF-8 are errors, not guesses.
func Encode(text string) (Encoded, error) {
	if text == "" {
		return Encoded{}, phonebook.Errorf(phonebook.EInvalid, "sms text is empty")
	}
	if !utf8.ValidString(text) {
		return Encoded{}, phonebook.Errorf(phonebook.EInvalid, "sms text is not valid UTF-8")
	}
	if e, ok := encodeGSM(text); ok {
		return e, nil
	}
	return encodeUCS2(text), nil
}

func encodeGSM(text string) (Encoded, bool) {
	e := Encoded{DataCoding: CodingGSM7, Bytes: make([]byte, 0, len(text)), bounds: make([]int, 0, len(text))}
	for _, r := range text {
		var ok bool
		if e.Bytes, ok = wire.AppendGSM7(e.Bytes, r); !ok {
			return Encoded{}, false
		}
		e.bounds = append(e.bounds, len(e.Bytes))
	}
	return e, true
}

func encodeUCS2(text string) Encoded {
	e := Encoded{DataCoding: CodingUCS2, Bytes: make([]byte, 0, 2*len(text)), bounds: make([]int, 0, len(text))}
	for _, r := range text {
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			e.Bytes = binary.BigEndian.AppendUint16(e.Bytes, uint16(r1))
			e.Bytes = binary.BigEndian.AppendUint16(e.Bytes, uint16(r2))
		} else {
			e.Bytes = binary.BigEndian.AppendUint16(e.Bytes, uint16(r))
		}
		e.bounds = append(e.bounds, len(e.Bytes))
	}
	return e
}

// Parts splits the text into submit_sm parts. A text that fits one SMS is
// one part without UDH; longer texts get a 6-byte concatenation UDH
// (05 00 03 ref total seq) on every part, with ref chosen by the caller and
// equal on every part. maxParts <= 0 means DefaultMaxParts; more parts than
// that (or than 255) is an error.
func (e Encoded) Parts(ref uint8, maxParts int) ([]Part, error) {
	if maxParts <= 0 {
		maxParts = DefaultMaxParts
	}
	maxParts = min(maxParts, 255)
	single, per := gsmSingle, gsmPart
	if e.DataCoding == CodingUCS2 {
		single, per = ucs2Single, ucs2Part
	}
	if len(e.Bytes) <= single {
		return []Part{{DataCoding: e.DataCoding, Payload: e.Bytes}}, nil
	}
	var chunks [][]byte
	start, last := 0, 0 // last: the furthest character end that still fits
	for _, end := range e.bounds {
		if end-start > per {
			chunks = append(chunks, e.Bytes[start:last])
			start = last
			if len(chunks) >= maxParts {
				return nil, e.tooLong(maxParts, per)
			}
		}
		last = end
	}
	chunks = append(chunks, e.Bytes[start:])
	if len(chunks) > maxParts {
		return nil, e.tooLong(maxParts, per)
	}
	parts := make([]Part, len(chunks))
	for i, c := range chunks {
		p := make([]byte, 0, udhConcat8+len(c))
		p = append(p, 0x05, 0x00, 0x03, ref, byte(len(chunks)), byte(i+1))
		p = append(p, c...)
		parts[i] = Part{DataCoding: e.DataCoding, ESMClass: 0x40, Payload: p}
	}
	return parts, nil
}

func (e Encoded) tooLong(maxParts, per int) error {
	unit := "GSM characters"
	if e.DataCoding == CodingUCS2 {
		unit, per = "UCS-2 characters", per/2
	}
	return phonebook.Errorf(phonebook.ETooLarge,
		"sms text is %d %s: more than %d parts of %d", e.Units(), unit, maxParts, per)
}

// Concat says which part of a concatenated SMS a payload is.
type Concat struct {
	Ref   uint16
	Total uint8
	Seq   uint8 // 1-based
}

// Decoded is an inbound (MO) payload taken apart.
type Decoded struct {
	Text   string
	Body   []byte // the payload after the UDH, still in its coding
	Concat *Concat
}

// Decode decodes an MO payload: the UDH when hasUDH (esm_class 0x40), then the
// text in its data coding. Concatenated parts should be joined on Body before
// decoding (DecodeText), because a phone may split an escape or surrogate pair.
func Decode(dataCoding uint8, payload []byte, hasUDH bool) (Decoded, error) {
	body, c, err := SplitUDH(payload, hasUDH)
	if err != nil {
		return Decoded{}, err
	}
	text, err := DecodeText(dataCoding, body)
	if err != nil {
		return Decoded{}, err
	}
	return Decoded{Text: text, Body: body, Concat: c}, nil
}

// SplitUDH removes the user data header from payload and reports the
// concatenation information element (8-bit 0x00 or 16-bit 0x08 reference)
// if there is one.
func SplitUDH(payload []byte, hasUDH bool) ([]byte, *Concat, error) {
	if !hasUDH {
		return payload, nil, nil
	}
	if len(payload) == 0 {
		return nil, nil, phonebook.Errorf(phonebook.EInvalid, "sms payload flagged with a UDH is empty")
	}
	udhl := int(payload[0])
	if 1+udhl > len(payload) {
		return nil, nil, phonebook.Errorf(phonebook.EInvalid, "sms UDH length %d exceeds the %d-byte payload", udhl, len(payload))
	}
	udh, body := payload[1:1+udhl], payload[1+udhl:]
	var c *Concat
	for len(udh) > 0 {
		if len(udh) < 2 || 2+int(udh[1]) > len(udh) {
			return nil, nil, phonebook.Errorf(phonebook.EInvalid, "sms UDH has a truncated information element")
		}
		iei, data := udh[0], udh[2:2+int(udh[1])]
		udh = udh[2+int(udh[1]):]
		switch {
		case iei == 0x00 && len(data) == 3:
			c = &Concat{Ref: uint16(data[0]), Total: data[1], Seq: data[2]}
		case iei == 0x08 && len(data) == 4:
			c = &Concat{Ref: binary.BigEndian.Uint16(data), Total: data[2], Seq: data[3]}
		}
	}
	if c != nil && (c.Total == 0 || c.Seq == 0 || c.Seq > c.Total) {
		return nil, nil, phonebook.Errorf(phonebook.EInvalid, "sms UDH says part %d of %d", c.Seq, c.Total)
	}
	return body, c, nil
}

// DecodeText decodes short-message bytes (no UDH) in the given data coding.
// 8-bit binary data is refused: it is not text.
func DecodeText(dataCoding uint8, b []byte) (string, error) {
	switch dataCoding {
	case CodingGSM7:
		return wire.DecodeGSM7(b)
	case CodingASCII:
		for _, c := range b {
			if c > 0x7F {
				return "", phonebook.Errorf(phonebook.EInvalid, "sms in ASCII (data_coding 1) holds byte 0x%02X", c)
			}
		}
		return string(b), nil
	case CodingLatin1:
		rs := make([]rune, len(b))
		for i, c := range b {
			rs[i] = rune(c)
		}
		return string(rs), nil
	case CodingUCS2:
		if len(b)%2 != 0 {
			return "", phonebook.Errorf(phonebook.EInvalid, "sms in UCS-2 has an odd length (%d bytes)", len(b))
		}
		u := make([]uint16, len(b)/2)
		for i := range u {
			u[i] = binary.BigEndian.Uint16(b[2*i:])
		}
		return string(utf16.Decode(u)), nil
	case CodingBinary, CodingBin8:
		return "", phonebook.Errorf(phonebook.EInvalid, "sms is 8-bit binary data (data_coding %d), not text", dataCoding)
	}
	return "", phonebook.Errorf(phonebook.EInvalid, "sms data_coding %d is not supported (want 0, 1, 3 or 8)", dataCoding)
}
