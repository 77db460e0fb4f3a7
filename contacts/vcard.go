package contacts

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/htmlindex"

	"github.com/phonebook/phonebook"
)

// vCard import limits: a file is at most MaxVCardBytes and MaxVCards cards;
// one logical line of a property we keep at most maxVCardLine bytes (photos
// and other large properties are skipped whatever their size).
const (
	MaxVCardBytes = 16 << 20
	MaxVCards     = 50000
	maxVCardLine  = 64 << 10
	maxPhysLine   = 1 << 20
)

// Card is one contact of a vCard file, reduced to what an address book
// sync needs.
type Card struct {
	UID    string
	FN     string   // formatted name
	N      []string // family, given, additional, prefix, suffix
	Phones []CardPhone
	Groups []string // CATEGORIES, X-GROUP, X-GROUP-MEMBERSHIP
}

// CardPhone is one TEL property: the number as written and its types,
// lower-case ("cell", "home", "work", "voice", "fax"...).
type CardPhone struct {
	Number string
	Types  []string
	Pref   bool
}

// Why this parser and not github.com/emersion/go-vcard (evaluated at
// v0.0.0-20260618161152-d854b7e0e2d3 for issue 16): its decoder covers 3.0
// and 4.0 but loses what phones export as 2.1, which is most of what users
// import, and it reports nothing about bad input. Fed the lines our tests
// hold (TestVCardWhatGoVCardLoses), it
//   - reads "TEL;CELL;PREF:+86..." (2.1 bare types) as a PREF parameter
//     whose value is the number, leaving the TEL value empty;
//   - ends a quoted-printable value at its soft line break ("=" at the end
//     of a line) and drops the continuation line;
//   - unescapes "\," before a list is split, so "CATEGORIES:a\,b,c" is three
//     groups, not two;
//   - skips lines it cannot parse and takes BEGIN:VCARD inside a card as a
//     property: no error, let alone one naming the line;
//   - reads a line of any length into memory, so the import limits below
//     would need a reader of our own in front of it anyway;
//   - leaves CHARSET and ENCODING to the caller.
// What remained for it after working around those is splitting
// name;params:value, so the parser below stays whole.

// ParseVCards reads vCard 2.1, 3.0 and 4.0 cards: folded lines, 2.1 bare
// types (TEL;CELL;PREF) and quoted-printable with soft line breaks, CHARSET
// parameters (UTF-8, GBK, Big5, ... as phones export them), 3.0 TYPE lists
// and item groups (item1.TEL), 4.0 tel: URIs and PREF=1. Properties it does
// not use are skipped. Malformed input gives an EInvalid error naming the
// line, never a panic; input over MaxVCardBytes is refused.
func ParseVCards(r io.Reader) ([]Card, error) {
	lr := &lineReader{sc: bufio.NewScanner(io.LimitReader(r, MaxVCardBytes+1))}
	lr.sc.Buffer(make([]byte, 4096), maxPhysLine)
	var cards []Card
	var cur *Card
	for {
		line, n, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if lr.total > MaxVCardBytes {
			return nil, phonebook.Errorf(phonebook.ETooLarge, "vCard file is larger than %d bytes", MaxVCardBytes)
		}
		p, ok := parseProp(line)
		if !ok {
			// Text between cards, empty lines, and the unindented base64
			// lines some 2.1 exporters write after PHOTO: nothing we use.
			continue
		}
		switch {
		case p.name == "BEGIN" && strings.EqualFold(p.raw, "VCARD"):
			if cur != nil {
				return nil, phonebook.Errorf(phonebook.EInvalid, "vCard line %d: BEGIN:VCARD inside a card", n)
			}
			cur = &Card{}
		case p.name == "END" && strings.EqualFold(p.raw, "VCARD"):
			if cur == nil {
				return nil, phonebook.Errorf(phonebook.EInvalid, "vCard line %d: END:VCARD without BEGIN", n)
			}
			if len(cards) == MaxVCards {
				return nil, phonebook.Errorf(phonebook.ETooLarge, "the vCard file holds more than %d cards", MaxVCards)
			}
			cards = append(cards, *cur)
			cur = nil
		case cur == nil:
			// Outside a card: ignore.
		case lr.oversize:
			if wanted(p.name) {
				return nil, phonebook.Errorf(phonebook.EInvalid, "vCard line %d: %s is longer than %d bytes", n, p.name, maxVCardLine)
			}
		default:
			cur.add(p)
		}
	}
	if cur != nil {
		return nil, phonebook.Errorf(phonebook.EInvalid, "vCard file ends inside a card (no END:VCARD)")
	}
	return cards, nil
}

func wanted(name string) bool {
	switch name {
	case "TEL", "FN", "N", "UID", "CATEGORIES", "X-GROUP", "X-GROUP-MEMBERSHIP":
		return true
	}
	return false
}

func (c *Card) add(p prop) {
	switch p.name {
	case "FN":
		c.FN = strings.TrimSpace(p.text())
	case "N":
		c.N = splitEscaped(p.value(), ';')
		for i := range c.N {
			c.N[i] = strings.TrimSpace(c.N[i])
		}
	case "UID":
		c.UID = strings.TrimSpace(p.text())
	case "CATEGORIES", "X-GROUP", "X-GROUP-MEMBERSHIP":
		for _, g := range splitEscaped(p.value(), ',') {
			if g = strings.TrimSpace(g); g != "" {
				c.Groups = append(c.Groups, g)
			}
		}
	case "TEL":
		num := strings.TrimSpace(p.text())
		if len(num) >= 4 && strings.EqualFold(num[:4], "tel:") {
			// RFC 3966: parameters such as ;ext= follow the number.
			num, _, _ = strings.Cut(num[4:], ";")
		}
		if num == "" {
			return
		}
		ph := CardPhone{Number: num}
		for _, t := range p.types {
			if t == "pref" {
				ph.Pref = true
			} else {
				ph.Types = append(ph.Types, t)
			}
		}
		if v := p.params["PREF"]; len(v) > 0 {
			ph.Pref = true
		}
		c.Phones = append(c.Phones, ph)
	}
}

// DisplayName is FN, or the name built from N: family name first and no
// space for CJK names ("张伟"), given name first otherwise.
func (c Card) DisplayName() string {
	if c.FN != "" {
		return c.FN
	}
	part := func(i int) string {
		if i < len(c.N) {
			return c.N[i]
		}
		return ""
	}
	family, given := part(0), part(1)
	if family == "" || given == "" {
		return family + given
	}
	if isCJK(family) || isCJK(given) {
		return family + given
	}
	return given + " " + family
}

func isCJK(s string) bool {
	r, _ := utf8.DecodeRuneInString(s)
	return r >= 0x2E80 && r <= 0x9FFF || r >= 0xAC00 && r <= 0xD7AF || r >= 0xF900 && r <= 0xFAFF
}

// Entries turns cards into address-book entries. An entry's id comes from
// the card's UID, or else from a hash of its name and numbers, so importing
// the same file twice changes nothing. Text longer than the sync limits is
// cut to them.
func Entries(cards []Card) []Entry {
	out := make([]Entry, 0, len(cards))
	seen := make(map[string]bool, len(cards))
	for _, c := range cards {
		e := Entry{Name: truncRunes(c.DisplayName(), MaxNameRunes)}
		if len(c.Groups) > 0 {
			e.Group = truncRunes(c.Groups[0], MaxNameRunes)
		}
		h := sha256.New()
		h.Write([]byte(e.Name))
		for _, p := range c.Phones {
			label := ""
			for _, t := range p.Types {
				if t != "voice" && t != "internet" && t != "x-internet" {
					label = t
					break
				}
			}
			e.Phones = append(e.Phones, Phone{Number: truncRunes(p.Number, MaxRawRunes), Label: truncRunes(label, MaxLabelRunes)})
			h.Write([]byte{0})
			h.Write([]byte(p.Number))
		}
		switch {
		case c.UID != "" && len(c.UID) <= MaxIDLen-4 && !hasControl(c.UID):
			e.ID = "vcf:" + c.UID
		case c.UID != "":
			sum := sha256.Sum256([]byte(c.UID))
			e.ID = "vcf:" + hex.EncodeToString(sum[:16])
		default:
			e.ID = "vcf:" + hex.EncodeToString(h.Sum(nil)[:16])
		}
		if seen[e.ID] {
			continue // the same card twice in one file
		}
		seen[e.ID] = true
		out = append(out, e)
	}
	return out
}

// truncRunes cuts s to n runes, turning control characters (a name with
// an escaped newline) into spaces.
func truncRunes(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n])
}

// ImportVCard parses a vCard file and adds its cards to the owner's book as
// a delta sync (cards already imported are updated, not duplicated).
func (s *Service) ImportVCard(ctx context.Context, owner phonebook.MSISDN, ownerRegion string, r io.Reader) (SyncResult, error) {
	cards, err := ParseVCards(r)
	if err != nil {
		return SyncResult{}, err
	}
	entries := Entries(cards)
	for i := range entries {
		if len(entries[i].Phones) > s.cfg.MaxPhonesPerEntry {
			entries[i].Phones = entries[i].Phones[:s.cfg.MaxPhonesPerEntry]
		}
	}
	return s.Sync(ctx, owner, ownerRegion, SyncRequest{Added: entries})
}

// lineReader yields logical lines: physical lines joined across folding
// (a line starting with a space or tab continues the previous one) and
// across quoted-printable soft breaks (a QP value line ending in "=").
type lineReader struct {
	sc       *bufio.Scanner
	peeked   *string
	n        int // physical line number
	total    int
	oversize bool // the last logical line was over maxVCardLine and cut
}

func (lr *lineReader) phys() (string, bool, error) {
	if lr.peeked != nil {
		s := *lr.peeked
		lr.peeked = nil
		return s, true, nil
	}
	if !lr.sc.Scan() {
		err := lr.sc.Err()
		if errors.Is(err, bufio.ErrTooLong) {
			return "", false, phonebook.Errorf(phonebook.EInvalid, "vCard line %d is longer than %d bytes", lr.n+1, maxPhysLine)
		}
		return "", false, err
	}
	lr.n++
	lr.total += len(lr.sc.Bytes()) + 1
	return strings.TrimSuffix(lr.sc.Text(), "\r"), true, nil
}

func (lr *lineReader) next() (string, int, error) {
	var b strings.Builder
	first, ok, err := lr.phys()
	if err != nil {
		return "", 0, err
	}
	if !ok {
		return "", 0, io.EOF
	}
	start := lr.n
	lr.oversize = false
	add := func(s string) {
		if b.Len()+len(s) > maxVCardLine {
			lr.oversize = true
			return
		}
		b.WriteString(s)
	}
	add(first)
	qp := isQPHeader(first)
	for {
		cur := b.String()
		if qp && strings.HasSuffix(cur, "=") && !lr.oversize {
			next, ok, err := lr.phys()
			if err != nil {
				return "", 0, err
			}
			if !ok {
				break
			}
			// 2.1 soft line break; some exporters also indent the next line.
			b.Reset()
			b.WriteString(cur[:len(cur)-1])
			add(strings.TrimLeft(next, " \t"))
			continue
		}
		next, ok, err := lr.phys()
		if err != nil {
			return "", 0, err
		}
		if !ok {
			break
		}
		if next != "" && (next[0] == ' ' || next[0] == '\t') {
			add(next[1:])
			continue
		}
		lr.peeked = &next
		break
	}
	return b.String(), start, nil
}

func isQPHeader(line string) bool {
	head, _, ok := strings.Cut(line, ":")
	return ok && strings.Contains(strings.ToUpper(head), "QUOTED-PRINTABLE")
}

// prop is one parsed property line.
type prop struct {
	name   string              // upper-case, group prefix removed
	params map[string][]string // upper-case keys
	types  []string            // lower-case TYPE values and 2.1 bare types
	raw    string              // the value as in the file
}

func parseProp(line string) (prop, bool) {
	// The value starts at the first ':' outside a quoted parameter value.
	inQuote, colon := false, -1
	for i := 0; i < len(line); i++ {
		if line[i] == '"' {
			inQuote = !inQuote
		} else if line[i] == ':' && !inQuote {
			colon = i
			break
		}
	}
	if colon <= 0 {
		return prop{}, false
	}
	head := splitQuoted(line[:colon], ';')
	name := strings.ToUpper(strings.TrimSpace(head[0]))
	if dot := strings.LastIndexByte(name, '.'); dot >= 0 {
		name = name[dot+1:] // item1.TEL
	}
	if name == "" {
		return prop{}, false
	}
	p := prop{name: name, params: map[string][]string{}, raw: line[colon+1:]}
	for _, param := range head[1:] {
		k, v, hasValue := strings.Cut(param, "=")
		k = strings.ToUpper(strings.TrimSpace(k))
		if !hasValue {
			// vCard 2.1: TEL;CELL;PREF, ENCODING and CHARSET values alone.
			switch k {
			case "QUOTED-PRINTABLE", "BASE64", "B", "8BIT", "7BIT":
				p.params["ENCODING"] = append(p.params["ENCODING"], k)
			case "":
			default:
				p.types = append(p.types, strings.ToLower(k))
			}
			continue
		}
		for _, quoted := range splitQuoted(v, ',') {
			// TYPE="voice,cell" is a list too.
			for _, one := range strings.Split(strings.Trim(strings.TrimSpace(quoted), `"`), ",") {
				p.params[k] = append(p.params[k], one)
				if k == "TYPE" && one != "" {
					p.types = append(p.types, strings.ToLower(one))
				}
			}
		}
	}
	return p, true
}

// value decodes the transfer encoding and charset; the result is valid
// UTF-8 and still holds vCard escapes.
func (p prop) value() string {
	data := []byte(p.raw)
	for _, enc := range p.params["ENCODING"] {
		switch strings.ToUpper(enc) {
		case "QUOTED-PRINTABLE":
			data = decodeQP(data)
		case "BASE64", "B":
			if dec, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(string(data)), "")); err == nil {
				data = dec
			}
		}
	}
	if cs := p.params["CHARSET"]; len(cs) > 0 && !strings.EqualFold(cs[0], "UTF-8") {
		if enc, err := htmlindex.Get(cs[0]); err == nil {
			if dec, err := enc.NewDecoder().Bytes(data); err == nil {
				data = dec
			}
		}
	}
	return strings.ToValidUTF8(string(data), "\uFFFD")
}

// text is the value with escapes resolved, for single-valued properties.
func (p prop) text() string {
	parts := splitEscaped(p.value(), -1)
	return parts[0]
}

// decodeQP decodes =XX sequences and leaves anything else as it is:
// exporters get quoted-printable subtly wrong and a name is better shown
// with a stray "=" than lost.
func decodeQP(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '=' && i+2 < len(b) {
			if h, ok := unhex(b[i+1]); ok {
				if l, ok := unhex(b[i+2]); ok {
					out = append(out, h<<4|l)
					i += 2
					continue
				}
			}
		}
		out = append(out, b[i])
	}
	return out
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// splitEscaped splits a value on sep (-1: do not split) and resolves the
// vCard escapes \, \; \\ and \n.
func splitEscaped(v string, sep rune) []string {
	var parts []string
	var cur bytes.Buffer
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\\' && i+1 < len(v) {
			i++
			switch v[i] {
			case 'n', 'N':
				cur.WriteByte('\n')
			default:
				cur.WriteByte(v[i])
			}
			continue
		}
		if sep >= 0 && rune(c) == sep {
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	return append(parts, cur.String())
}

// splitQuoted splits on sep outside double quotes.
func splitQuoted(s string, sep byte) []string {
	var parts []string
	inQuote, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			inQuote = !inQuote
		case s[i] == sep && !inQuote:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}
