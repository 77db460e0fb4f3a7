package mm7

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"strings"
)

// CaptionLocation is the Content-Location under which BuildSMIL refers to
// the caption: CaptionPart makes the part that goes with it.
const CaptionLocation = "caption.txt"

// CaptionPart is the text part for a caption, as BuildSMIL refers to it.
func CaptionPart(caption string) Part {
	return Part{ContentType: "text/plain; charset=utf-8", ContentID: "caption", ContentLocation: CaptionLocation, Data: []byte(caption)}
}

// BuildSMIL makes a SMIL presentation (the MMS SMIL profile: no namespace,
// two regions) for parts and a caption: one slide per part, images and
// video in the Image region, text in the Text region, audio alone; the
// caption (when not "") shows under the first slide, referred to as
// CaptionLocation, so add CaptionPart(caption) to the message's parts.
// Parts are referred to by ContentLocation, else by "cid:"+ContentID; a
// part with neither, a SMIL part and the caption part get no slide.
// Image and text slides last 5 s; audio and video ones as long as they play.
func BuildSMIL(parts []Part, caption string) []byte {
	var w xw
	w.raw(`<smil><head><layout><root-layout width="100%" height="100%"/>`)
	w.raw(`<region id="Image" left="0%" top="0%" width="100%" height="75%" fit="meet"/>`)
	w.raw(`<region id="Text" left="0%" top="75%" width="100%" height="25%" fit="scroll"/>`)
	w.raw(`</layout></head><body>`)
	captionDone := caption == ""
	slides := 0
	for _, p := range parts {
		ref := p.ref()
		mt, _, _ := mime.ParseMediaType(p.ContentType)
		if ref == "" || mt == "application/smil" || p.ContentLocation == CaptionLocation {
			continue
		}
		kind, region := "ref", "Image"
		switch {
		case strings.HasPrefix(mt, "image/"):
			kind = "img"
		case strings.HasPrefix(mt, "video/"):
			kind = "video"
		case strings.HasPrefix(mt, "audio/"):
			kind, region = "audio", ""
		case strings.HasPrefix(mt, "text/"):
			kind, region = "text", "Text"
		}
		if kind == "audio" || kind == "video" {
			w.raw(`<par>`)
		} else {
			w.raw(`<par dur="5000ms">`)
		}
		w.media(kind, ref, region)
		if !captionDone && region != "Text" {
			w.media("text", CaptionLocation, "Text")
			captionDone = true
		}
		w.raw(`</par>`)
		slides++
	}
	if !captionDone || slides == 0 {
		w.raw(`<par dur="5000ms">`)
		if caption != "" {
			w.media("text", CaptionLocation, "Text")
		}
		w.raw(`</par>`)
	}
	w.raw(`</body></smil>`)
	return w.b.Bytes()
}

func (w *xw) media(kind, src, region string) {
	w.raw(`<` + kind + ` src="`)
	xml.EscapeText(&w.b, []byte(src))
	w.raw(`"`)
	if region != "" {
		w.raw(` region="` + region + `"`)
	}
	w.raw(`/>`)
}

// checkSMILRefs makes sure every src in smil names one of parts, so that a
// message never goes out with a presentation pointing at nothing.
func checkSMILRefs(smil []byte, parts []Part) error {
	if len(smil) == 0 {
		return nil
	}
	refs := map[string]bool{}
	for _, p := range parts {
		if p.ContentLocation != "" {
			refs[p.ContentLocation] = true
		}
		if p.ContentID != "" {
			refs["cid:"+p.ContentID] = true
		}
	}
	dec := xml.NewDecoder(bytes.NewReader(smil))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("the SMIL is not well-formed XML: %w", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			for _, a := range se.Attr {
				if a.Name.Local == "src" && !refs[a.Value] {
					return fmt.Errorf("the SMIL refers to %q, which no part is (give a part that Content-Location, or cid: its Content-ID)", truncate(a.Value, 80))
				}
			}
		}
	}
}
