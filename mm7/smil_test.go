package mm7

import (
	"bytes"
	"encoding/base64"
	"encoding/xml"
	"strings"
	"testing"
)

func TestBuildSMIL(t *testing.T) {
	img := Part{ContentType: "image/png", ContentLocation: "a.png"}
	vid := Part{ContentType: "video/3gpp", ContentID: "v1"}
	aud := Part{ContentType: "audio/amr", ContentLocation: "s.amr"}
	card := Part{ContentType: "text/vcard", ContentLocation: "bob.vcf"}
	other := Part{ContentType: "application/pdf", ContentLocation: `a "quoted" & odd.pdf`}
	noRef := Part{ContentType: "image/gif"}
	cases := []struct {
		name    string
		parts   []Part
		caption string
		want    []string // in order
		not     []string
	}{
		{"caption only", nil, "hi", []string{`<par dur="5000ms"><text src="caption.txt" region="Text"/></par>`}, nil},
		{"nothing", nil, "", []string{`<body><par dur="5000ms"></par></body>`}, nil},
		{"audio then image", []Part{aud, img}, "hi", []string{`<par><audio src="s.amr"/><text src="caption.txt"`, `<img src="a.png" region="Image"/></par>`}, nil},
		{"video by cid", []Part{vid}, "", []string{`<par><video src="cid:v1" region="Image"/></par>`}, []string{"caption.txt"}},
		{"vcard, other, no ref, caption part skipped", []Part{card, other, noRef, CaptionPart("x")}, "x",
			[]string{`<text src="bob.vcf" region="Text"/>`, `<ref src="a &#34;quoted&#34; &amp; odd.pdf" region="Image"/><text src="caption.txt"`}, []string{"image/gif", `src=""`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			smil := BuildSMIL(tc.parts, tc.caption)
			if err := xml.Unmarshal(smil, new(struct{})); err != nil {
				t.Fatalf("not XML: %v\n%s", err, smil)
			}
			rest := string(smil)
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("%s\nlacks (in order) %s", smil, w)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tc.not {
				if strings.Contains(string(smil), n) {
					t.Fatalf("%s\nholds %s", smil, n)
				}
			}
			parts := tc.parts
			if tc.caption != "" {
				parts = append(parts, CaptionPart(tc.caption))
			}
			if err := checkSMILRefs(smil, parts); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestNotCapable(t *testing.T) {
	for _, tc := range []struct {
		st    Status
		codes []int
		want  bool
	}{
		{NewStatus(2002, "recipient +8613700137000 is not MMS capable"), nil, true},
		{Status{Code: 3002, Text: "Handset Not MMS-Capable"}, nil, true},
		{Status{Code: 4000, Text: "not MMS capable"}, nil, false}, // temporary: not an answer about the phone
		{Status{Code: 6102, Text: "Unsupported terminal"}, nil, true},
		{Status{Code: 2001, Details: "subscriber is a non-MMS user"}, nil, true},
		{NewStatus(4007, "VASP lacks the capability for this service"), nil, false},
		{NewStatus(2003, "no such subscriber"), nil, false},
		{NewStatus(2003, ""), []int{2003}, true},
		{NewStatus(1000, "not capable"), nil, false},
	} {
		if got := notCapable(tc.st, tc.codes); got != tc.want {
			t.Errorf("notCapable(%v, %v) = %v", tc.st, tc.codes, got)
		}
	}
}

func TestWriteBase64FoldsLines(t *testing.T) {
	for _, n := range []int{0, 1, 56, 57, 58, 57 * 64, 57*64 + 1, 100 << 10} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(i*31 + i/7)
		}
		var b bytes.Buffer
		if err := writeBase64(&b, data); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(b.String(), "\r\n"), "\r\n")
		for i, l := range lines {
			if len(l) > 76 || i < len(lines)-1 && len(l) != 76 {
				t.Fatalf("%d bytes: line %d is %d characters", n, i, len(l))
			}
		}
		got, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(b.String(), "\r\n", ""))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: round trip %v", n, err)
		}
	}
}
