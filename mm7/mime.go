package mm7

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

const (
	soapContentID    = "mm7-soap"
	contentContentID = "mm7-content"
	smilContentID    = "mm7-smil"

	// maxParts bounds the parts of one message, at every level together.
	maxParts = 100
	// maxDepth bounds multipart nesting: the SOAP attachments, the content,
	// and one more (e.g. multipart/alternative inside the content).
	maxDepth = 3
)

// body is an HTTP body: its Content-Type and bytes.
type body struct {
	contentType string
	data        []byte
}

// encodeMessage builds the HTTP body of an MM7 request: the SOAP envelope
// alone (text/xml), or with a content (multipart/related, the SOAP part
// first). The content is a multipart/related with the SMIL first when there
// is one, else a multipart/mixed.
func encodeMessage(soap func(href string) []byte, parts []Part, smil []byte) (body, error) {
	if len(parts) == 0 && len(smil) == 0 {
		return body{`text/xml; charset="utf-8"`, soap("")}, nil
	}
	var inner bytes.Buffer
	mw := multipart.NewWriter(&inner)
	var contentType string
	if len(smil) > 0 {
		contentType = mime.FormatMediaType("multipart/related", map[string]string{
			"boundary": mw.Boundary(), "type": "application/smil", "start": "<" + smilContentID + ">"})
		if err := writePart(mw, Part{ContentType: "application/smil", ContentID: smilContentID, ContentLocation: "presentation.smil", Data: smil}); err != nil {
			return body{}, err
		}
	} else {
		contentType = mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": mw.Boundary()})
	}
	for _, p := range parts {
		if err := writePart(mw, p); err != nil {
			return body{}, err
		}
	}
	if err := mw.Close(); err != nil {
		return body{}, err
	}

	var outer bytes.Buffer
	ow := multipart.NewWriter(&outer)
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", `text/xml; charset="utf-8"`)
	h.Set("Content-ID", "<"+soapContentID+">")
	w, err := ow.CreatePart(h)
	if err != nil {
		return body{}, err
	}
	w.Write(soap("cid:" + contentContentID))
	h = textproto.MIMEHeader{}
	h.Set("Content-Type", contentType)
	h.Set("Content-ID", "<"+contentContentID+">")
	if w, err = ow.CreatePart(h); err != nil {
		return body{}, err
	}
	w.Write(inner.Bytes())
	if err := ow.Close(); err != nil {
		return body{}, err
	}
	ct := mime.FormatMediaType("multipart/related", map[string]string{
		"boundary": ow.Boundary(), "type": "text/xml", "start": "<" + soapContentID + ">"})
	return body{ct, outer.Bytes()}, nil
}

// writePart writes one content part: text as 8bit, anything else base64.
func writePart(mw *multipart.Writer, p Part) error {
	ct := p.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	if _, _, err := mime.ParseMediaType(ct); err != nil {
		return fmt.Errorf("part %q: content type %q: %w", p.ref(), ct, err)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", ct)
	if p.ContentID != "" {
		h.Set("Content-ID", "<"+p.ContentID+">")
	}
	if p.ContentLocation != "" {
		h.Set("Content-Location", p.ContentLocation)
	}
	text := strings.HasPrefix(ct, "text/") || strings.HasPrefix(ct, "application/smil")
	if !text {
		h.Set("Content-Transfer-Encoding", "base64")
	}
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if text {
		_, err = w.Write(p.Data)
		return err
	}
	lw := &lineWriter{w: w}
	enc := base64.NewEncoder(base64.StdEncoding, lw)
	enc.Write(p.Data)
	enc.Close()
	return lw.err
}

// lineWriter breaks base64 into 76-character lines (RFC 2045).
type lineWriter struct {
	w   io.Writer
	n   int
	err error
}

func (l *lineWriter) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 && l.err == nil {
		chunk := min(76-l.n, len(b))
		_, l.err = l.w.Write(b[:chunk])
		l.n += chunk
		b = b[chunk:]
		if l.n == 76 {
			_, l.err = l.w.Write([]byte("\r\n"))
			l.n = 0
		}
	}
	return total, l.err
}

// mimePart is one decoded MIME part.
type mimePart struct {
	header      textproto.MIMEHeader
	contentType string            // media type, lower case
	params      map[string]string // its parameters
	data        []byte            // transfer encoding undone
	children    []*mimePart       // the parts of a multipart part
}

func (p *mimePart) contentID() string {
	return strings.Trim(strings.TrimSpace(p.header.Get("Content-ID")), "<>")
}

// message is a decoded MM7 HTTP body.
type message struct {
	soap    []byte
	content []Part
	smil    []byte
}

// decodeError is a malformed body: an MM7 status and the HTTP status a
// server answers it with.
func decodeError(httpStatus, code int, format string, args ...any) *StatusError {
	return &StatusError{HTTPStatus: httpStatus, Status: NewStatus(code, fmt.Sprintf(format, args...))}
}

// decodeMessage reads an MM7 body of the given Content-Type: a bare SOAP
// envelope, or multipart/related with the SOAP part as its start (or first)
// part and the content the envelope's Content href names. data is already
// bounded by the caller.
func decodeMessage(contentType string, data []byte) (*message, *envelopeIn, error) {
	if contentType == "" {
		return nil, nil, decodeError(http.StatusUnsupportedMediaType, StatusMessageFormatCorrupt, "no Content-Type: want text/xml or multipart/related")
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, nil, decodeError(http.StatusUnsupportedMediaType, StatusMessageFormatCorrupt, "Content-Type %q: %v", truncate(contentType, 80), err)
	}
	var msg message
	var parts []*mimePart
	switch {
	case mt == "text/xml" || mt == "application/xml" || mt == "application/soap+xml":
		msg.soap = data
	case strings.HasPrefix(mt, "multipart/"):
		count := 0
		if parts, err = readMultipart(data, params["boundary"], 1, &count); err != nil {
			return nil, nil, err
		}
		root := 0
		if start := strings.Trim(params["start"], "<> "); start != "" {
			root = -1
			for i, p := range parts {
				if p.contentID() == start {
					root = i
				}
			}
			if root < 0 {
				return nil, nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "no part has the start Content-ID <%s>", truncate(start, 80))
			}
		}
		if !isXML(parts[root].contentType) {
			return nil, nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "the SOAP part is %q, not text/xml", truncate(parts[root].contentType, 80))
		}
		msg.soap = parts[root].data
		parts = append(parts[:root:root], parts[root+1:]...)
	default:
		return nil, nil, decodeError(http.StatusUnsupportedMediaType, StatusMessageFormatCorrupt, "Content-Type %q: want text/xml or multipart/related", truncate(mt, 80))
	}
	env, err := decodeEnvelope(msg.soap)
	if err != nil {
		return nil, nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "%v", err)
	}
	href := ""
	if b := env.x.Body; b != nil {
		switch {
		case b.SubmitReq != nil && b.SubmitReq.Content != nil:
			href = b.SubmitReq.Content.Href
		case b.DeliverReq != nil && b.DeliverReq.Content != nil:
			href = b.DeliverReq.Content.Href
		}
	}
	if err := msg.takeContent(parts, strings.TrimSpace(href)); err != nil {
		return nil, nil, err
	}
	return &msg, env, nil
}

func isXML(mt string) bool {
	return mt == "text/xml" || mt == "application/xml" || mt == "application/soap+xml"
}

// takeContent finds the content the envelope refers to among the
// attachments and flattens it into Parts (SMIL apart).
func (msg *message) takeContent(parts []*mimePart, href string) error {
	if href == "" && len(parts) == 0 {
		return nil
	}
	var content *mimePart
	switch {
	case href != "":
		for _, p := range parts {
			if matchHref(p, href) {
				content = p
				break
			}
		}
		if content == nil {
			return decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "the Content href %q names no attachment", truncate(href, 80))
		}
	case len(parts) == 1:
		content = parts[0] // no href, one attachment: that is the content
	default:
		return decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "%d attachments and no Content href to say which is the content", len(parts))
	}
	var leaves []*mimePart
	if content.children != nil {
		leaves = content.children
	} else {
		leaves = []*mimePart{content}
	}
	for _, p := range leaves {
		if p.contentType == "application/smil" && msg.smil == nil {
			msg.smil = p.data
			continue
		}
		msg.content = append(msg.content, Part{
			ContentType:     p.header.Get("Content-Type"),
			ContentID:       p.contentID(),
			ContentLocation: strings.TrimSpace(p.header.Get("Content-Location")),
			Data:            p.data,
		})
	}
	return nil
}

func matchHref(p *mimePart, href string) bool {
	if cid, ok := strings.CutPrefix(href, "cid:"); ok {
		if u, err := url.PathUnescape(cid); err == nil {
			cid = u
		}
		return p.contentID() == strings.Trim(cid, "<>")
	}
	return strings.TrimSpace(p.header.Get("Content-Location")) == href || p.contentID() == strings.Trim(href, "<>")
}

// readMultipart splits a multipart body; a part that is multipart itself
// is split too (children), down to maxDepth.
func readMultipart(data []byte, boundary string, depth int, count *int) ([]*mimePart, error) {
	if boundary == "" {
		return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "multipart Content-Type without a boundary")
	}
	if depth > maxDepth {
		return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "multipart nested deeper than %d levels", maxDepth)
	}
	mr := multipart.NewReader(bytes.NewReader(data), boundary)
	var parts []*mimePart
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, multipartError(err)
		}
		if *count++; *count > maxParts {
			return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "more than %d MIME parts", maxParts)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			return nil, multipartError(err)
		}
		mp := &mimePart{header: p.Header}
		ct := p.Header.Get("Content-Type")
		if ct == "" {
			ct = "text/plain" // RFC 2045's default
		}
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil {
			return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "a part's Content-Type %q: %v", truncate(ct, 80), err)
		}
		mp.contentType, mp.params = mt, params
		if mp.data, err = undoTransferEncoding(p.Header.Get("Content-Transfer-Encoding"), b); err != nil {
			return nil, err
		}
		if strings.HasPrefix(mt, "multipart/") {
			if mp.children, err = readMultipart(mp.data, params["boundary"], depth+1, count); err != nil {
				return nil, err
			}
		}
		parts = append(parts, mp)
	}
	if len(parts) == 0 {
		return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "multipart body with no parts")
	}
	return parts, nil
}

func multipartError(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "multipart body truncated: it ends before its closing boundary")
	}
	return decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "malformed multipart body: %v", err)
}

func undoTransferEncoding(cte string, b []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit", "binary":
		return b, nil
	case "base64":
		out := make([]byte, base64.StdEncoding.DecodedLen(len(b)))
		clean := stripSpace(b)
		n, err := base64.StdEncoding.Decode(out, clean)
		if err != nil { // some senders leave out the padding
			n, err = base64.RawStdEncoding.Decode(out, bytes.TrimRight(clean, "="))
		}
		if err != nil {
			return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "a base64 part does not decode: %v", err)
		}
		return out[:n], nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(b)))
		if err != nil {
			return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "a quoted-printable part does not decode: %v", err)
		}
		return out, nil
	}
	return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "unsupported Content-Transfer-Encoding %q", truncate(cte, 40))
}

// stripSpace drops the whitespace base64 bodies are folded with.
func stripSpace(b []byte) []byte {
	if !bytes.ContainsAny(b, "\r\n \t") {
		return b
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
			out = append(out, c)
		}
	}
	return out
}
