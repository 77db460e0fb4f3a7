package contacts_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

type wantCard struct {
	name   string
	phones []string
	types  [][]string
	pref   []bool
	groups []string
	uid    string
}

func parseFixture(t *testing.T, name string) []contacts.Card {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cards, err := contacts.ParseVCards(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cards
}

func checkCards(t *testing.T, got []contacts.Card, want []wantCard) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d cards, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.DisplayName() != w.name {
			t.Errorf("card %d: name %q, want %q", i, g.DisplayName(), w.name)
		}
		var nums []string
		var types [][]string
		var pref []bool
		for _, p := range g.Phones {
			nums = append(nums, p.Number)
			types = append(types, p.Types)
			pref = append(pref, p.Pref)
		}
		if !slices.Equal(nums, w.phones) {
			t.Errorf("card %d: phones %q, want %q", i, nums, w.phones)
		}
		if w.types != nil {
			for j := range w.types {
				if j >= len(types) || !slices.Equal(types[j], w.types[j]) {
					t.Errorf("card %d phone %d: types %v, want %v", i, j, types, w.types)
					break
				}
			}
		}
		if w.pref != nil && !slices.Equal(pref, w.pref) {
			t.Errorf("card %d: pref %v, want %v", i, pref, w.pref)
		}
		if !slices.Equal(g.Groups, w.groups) {
			t.Errorf("card %d: groups %q, want %q", i, g.Groups, w.groups)
		}
		if g.UID != w.uid {
			t.Errorf("card %d: uid %q, want %q", i, g.UID, w.uid)
		}
	}
}

func TestVCardAndroid21(t *testing.T) {
	checkCards(t, parseFixture(t, "android-2.1.vcf"), []wantCard{
		{name: "张伟", phones: []string{"138-0013-8000", "010-6552-9988"},
			types: [][]string{{"cell"}, {"home"}}, pref: []bool{true, false}},
		{name: "欧阳小明（北京分公司）销售部经理", phones: []string{"+86 139 1234 5678", "0086 10 8888 6666", "13912345678"},
			groups: []string{"同事"}},
		{name: "John Smith", phones: []string{"+44 7700 900123", "+44 20 7946 0000"}, types: [][]string{{"cell"}, {"fax"}}},
		{name: "中国移动客服", phones: []string{"10086"}},
		{name: "韩梅梅", phones: []string{"+8613800138005"}, pref: []bool{true}}, // CHARSET=GB2312
	})
}

func TestVCardIPhone30(t *testing.T) {
	checkCards(t, parseFixture(t, "iphone-3.0.vcf"), []wantCard{
		{name: "Johnny Appleseed", phones: []string{"+44 20 7946 0958", "07700 900456", "+86 (10) 6552-9988"},
			types: [][]string{nil, {"cell", "voice"}, {"home", "voice"}}, pref: []bool{true, false, false},
			groups: []string{"Friends", "Orchard Club"}},
		{name: "李雷", phones: []string{"+86 138 0013 8001"}, pref: []bool{true}, groups: []string{"同学"}},
		{name: "Maximilian Alexander von Hohenzollern-Sigmaringen und zu Sayn-Wittgenstein",
			phones: []string{"+49 30 901820", "+49 151 23456789"}},
	})
}

func TestVCard40(t *testing.T) {
	checkCards(t, parseFixture(t, "vcard-4.0.vcf"), []wantCard{
		{name: "Jane Doe", phones: []string{"+44-7700-900123", "+44-20-7946-0958"},
			types: [][]string{{"voice", "cell"}, {"work"}}, pref: []bool{true, false},
			groups: []string{"Colleagues", "Running"}, uid: "urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1"},
		{name: "王小明", phones: []string{"+86-139-0000-0001", "010 6552 9988"},
			groups: []string{"家人"}, uid: "urn:uuid:0c8a4e4a-7d2b-4b9e-9d1c-2f4f0d3a9b11"},
	})
}

func TestVCardNameFromN(t *testing.T) {
	in := "BEGIN:VCARD\nVERSION:3.0\nN:Lovelace;Ada;;;\nTEL:+44 20 7946 0001\nEND:VCARD\n" +
		"BEGIN:VCARD\nVERSION:3.0\nN:周;杰;;;\nEND:VCARD\n"
	cards, err := contacts.ParseVCards(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if cards[0].DisplayName() != "Ada Lovelace" || cards[1].DisplayName() != "周杰" {
		t.Fatalf("names %q %q", cards[0].DisplayName(), cards[1].DisplayName())
	}
}

func TestVCardMalformed(t *testing.T) {
	for _, in := range []string{
		"BEGIN:VCARD\nVERSION:3.0\nFN:no end\n",
		"BEGIN:VCARD\nBEGIN:VCARD\nEND:VCARD\n",
		"END:VCARD\n",
		"BEGIN:VCARD\nFN:" + strings.Repeat("x", 2<<20) + "\nEND:VCARD\n",
	} {
		_, err := contacts.ParseVCards(strings.NewReader(in))
		if phonebook.ErrorCode(err) != phonebook.EInvalid {
			t.Errorf("%.40q: %v, want invalid_request", in, err)
		}
	}
	// A big property we skip (a photo), folded or in 2.1's unindented
	// base64 lines, is not an error.
	photo := "BEGIN:VCARD\nFN:x\nPHOTO;ENCODING=b:" + strings.Repeat("QUFB\n ", 40000) + "\nEND:VCARD\n"
	photo21 := "BEGIN:VCARD\r\nVERSION:2.1\r\nFN:x\r\nPHOTO;ENCODING=BASE64;JPEG:QUFB\r\nQUFBQUFB\r\nQUFB\r\n\r\nTEL:1\r\nEND:VCARD\r\n"
	for _, in := range []string{photo, photo21} {
		if cards, err := contacts.ParseVCards(strings.NewReader(in)); err != nil || len(cards) != 1 {
			t.Fatalf("card with a photo: %v", err)
		}
	}
}

func TestVCardImport(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		ctx := context.Background()
		storetest.Users(t, db, "+8613800138000")
		svc, _ := newService(t, db, contacts.Config{})
		b, err := os.ReadFile(filepath.Join("testdata", "android-2.1.vcf"))
		if err != nil {
			t.Fatal(err)
		}
		res, err := svc.ImportVCard(ctx, alice, "", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Entries) != 5 || res.Book != 5 {
			t.Fatalf("import %+v", res)
		}
		zw := res.Entries[0].Phones[0]
		if zw.Number != "+8613800138000" || !zw.Registered {
			t.Fatalf("张伟's mobile %+v", zw)
		}
		if e := res.Entries[3]; e.Code != phonebook.EInvalidNumber {
			t.Fatalf("10086 reported as %+v", e)
		}
		// Importing the same file again adds nothing.
		res, err = svc.ImportVCard(ctx, alice, "", bytes.NewReader(b))
		if err != nil || res.Book != 5 {
			t.Fatalf("second import %+v %v", res, err)
		}
		book, _ := svc.Restore(ctx, alice)
		var names []string
		for _, e := range book {
			names = append(names, e.Name)
		}
		if !slices.Contains(names, "欧阳小明（北京分公司）销售部经理") || !slices.Contains(names, "韩梅梅") {
			t.Fatalf("restored names %q", names)
		}
	})
}

func FuzzParseVCards(f *testing.F) {
	for _, name := range []string{"android-2.1.vcf", "iphone-3.0.vcf", "vcard-4.0.vcf"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("BEGIN:VCARD\nN;ENCODING=QUOTED-PRINTABLE:=\n=\nTEL;VALUE=uri:tel:;\nEND:VCARD"))
	f.Add([]byte("BEGIN:VCARD\nTEL;TYPE=\"a,b:c\":1\nX-GROUP:\\\nEND:VCARD\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cards, err := contacts.ParseVCards(bytes.NewReader(b))
		if err != nil {
			if phonebook.ErrorCode(err) == phonebook.EInternal {
				t.Fatalf("uncoded error %v", err)
			}
			return
		}
		for _, c := range cards {
			for _, s := range append([]string{c.FN, c.DisplayName()}, c.Groups...) {
				if !utf8.ValidString(s) {
					t.Fatalf("invalid UTF-8 %q", s)
				}
			}
		}
		for _, e := range contacts.Entries(cards) {
			if e.ID == "" || len(e.ID) > contacts.MaxIDLen || utf8.RuneCountInString(e.Name) > contacts.MaxNameRunes {
				t.Fatalf("entry out of limits %+v", e)
			}
		}
	})
}

func TestVCardTooManyCards(t *testing.T) {
	in := strings.Repeat("BEGIN:VCARD\nEND:VCARD\n", contacts.MaxVCards+1)
	if _, err := contacts.ParseVCards(strings.NewReader(in)); phonebook.ErrorCode(err) != phonebook.ETooLarge {
		t.Fatalf("%d cards: %v", contacts.MaxVCards+1, err)
	}
}

// What github.com/emersion/go-vcard gets wrong on these lines (see the
// comment above ParseVCards) is why the parser is our own; this pins each.
func TestVCardWhatGoVCardLoses(t *testing.T) {
	in := "BEGIN:VCARD\r\nVERSION:2.1\r\n" +
		"FN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:=E5=BC=A0=\r\n=E4=BC=9F\r\n" +
		"TEL;CELL;PREF:+8613800138000\r\n" +
		"CATEGORIES:a\\,b,c\r\n" +
		"END:VCARD\r\n"
	cards, err := contacts.ParseVCards(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	checkCards(t, cards, []wantCard{{name: "张伟", phones: []string{"+8613800138000"},
		types: [][]string{{"cell"}}, pref: []bool{true}, groups: []string{"a,b", "c"}}})

	_, err = contacts.ParseVCards(strings.NewReader("BEGIN:VCARD\nFN:x\nBEGIN:VCARD\nEND:VCARD\n"))
	if phonebook.ErrorCode(err) != phonebook.EInvalid || !strings.Contains(err.Error(), "line 3") {
		t.Fatalf("nested BEGIN: %v; want invalid_request naming line 3", err)
	}
}
