package mm7

import (
	"bufio"
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

	"golang.org/x/text/encoding/htmlindex"
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
	size := len(smil) + 4096
	for _, p := range parts {
		size += len(p.Data)*137/100 + 256 // base64 and its line breaks, headers
	}
	var outer bytes.Buffer
	outer.Grow(size)
	ow := multipart.NewWriter(&outer)
	h := textproto.MIMEHeader{}
	h.Set("Content-Type", `text/xml; charset="utf-8"`)
	h.Set("Content-ID", "<"+soapContentID+">")
	w, err := ow.CreatePart(h)
	if err != nil {
		return body{}, err
	}
	w.Write(soap("cid:" + contentContentID))

	// The content, written straight into its part: its boundary is chosen
	// first, for the part's Content-Type.
	innerBoundary := multipart.NewWriter(io.Discard).Boundary()
	var contentType string
	if len(smil) > 0 {
		contentType = mime.FormatMediaType("multipart/related", map[string]string{
			"boundary": innerBoundary, "type": "application/smil", "start": "<" + smilContentID + ">"})
	} else {
		contentType = mime.FormatMediaType("multipart/mixed", map[string]string{"boundary": innerBoundary})
	}
	h = textproto.MIMEHeader{}
	h.Set("Content-Type", contentType)
	h.Set("Content-ID", "<"+contentContentID+">")
	if w, err = ow.CreatePart(h); err != nil {
		return body{}, err
	}
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(innerBoundary); err != nil {
		return body{}, err
	}
	if len(smil) > 0 {
		if err := writePart(mw, Part{ContentType: "application/smil", ContentID: smilContentID, ContentLocation: "presentation.smil", Data: smil}); err != nil {
			return body{}, err
		}
	}
	for _, p := range parts {
		if err := writePart(mw, p); err != nil {
			return body{}, err
		}
	}
	if err := mw.Close(); err != nil {
		return body{}, err
	}
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
	return writeBase64(w, p.Data)
}

// writeBase64 writes data in base64, in lines of 76 characters (RFC 2045),
// through a small buffer: 57 bytes make a line.
func writeBase64(w io.Writer, data []byte) error {
	const linesPerChunk = 64
	var buf [linesPerChunk * 78]byte
	for len(data) > 0 {
		n := 0
		for range linesPerChunk {
			if len(data) == 0 {
				break
			}
			chunk := data[:min(57, len(data))]
			base64.StdEncoding.Encode(buf[n:], chunk)
			n += base64.StdEncoding.EncodedLen(len(chunk))
			buf[n], buf[n+1] = '\r', '\n'
			n += 2
			data = data[len(chunk):]
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
	}
	return nil
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
	mt, params, err := parseMediaType(contentType)
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
	// Without an href (some MMSCs leave it out, or attach the parts beside
	// the envelope without a multipart of their own) every attachment is
	// content.
	leaves := parts
	if href != "" {
		var content *mimePart
		for _, p := range parts {
			if matchHref(p, href) {
				content = p
				break
			}
		}
		if content == nil {
			return decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "the Content href %q names no attachment", truncate(href, 80))
		}
		leaves = []*mimePart{content}
	}
	for _, p := range flatten(leaves) {
		if p.contentType == "application/smil" && msg.smil == nil {
			msg.smil = p.data
			continue
		}
		msg.content = append(msg.content, textToUTF8(Part{
			ContentType:     p.header.Get("Content-Type"),
			ContentID:       p.contentID(),
			ContentLocation: strings.TrimSpace(p.header.Get("Content-Location")),
			Data:            p.data,
		}))
	}
	return nil
}

// parseMediaType is mime.ParseMediaType, and when that refuses a header
// for its parameters, a lenient reading: MMSCs write type=text/xml and
// boundaries with "/" or "=" unquoted.
func parseMediaType(v string) (string, map[string]string, error) {
	mt, params, err := mime.ParseMediaType(v)
	if err == nil || !errors.Is(err, mime.ErrInvalidMediaParameter) {
		return mt, params, err
	}
	params = map[string]string{}
	segs := splitOutsideQuotes(v, ';')
	for _, seg := range segs[1:] {
		k, val, ok := strings.Cut(seg, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = val[1 : len(val)-1]
		}
		params[k] = val
	}
	return mt, params, nil
}

// splitOutsideQuotes splits s at sep where sep is not inside double quotes.
func splitOutsideQuotes(s string, sep byte) []string {
	var out []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '"':
			quoted = !quoted
		case s[i] == sep && !quoted:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// textToUTF8 converts a text/plain part in another charset (GB2312, GBK,
// Big5, EUC-KR, Shift_JIS, ISO-8859-x, UTF-16 ...: phones write them) to
// UTF-8, so that readers of Parts deal with one; a charset we do not know,
// or text that does not convert, is left as it came.
func textToUTF8(p Part) Part {
	mt, params, err := parseMediaType(p.ContentType)
	cs := strings.ToLower(params["charset"])
	if err != nil || mt != "text/plain" || cs == "" || cs == "utf-8" || cs == "us-ascii" {
		return p
	}
	enc, err := htmlindex.Get(cs)
	if err != nil {
		return p
	}
	data, err := enc.NewDecoder().Bytes(p.Data)
	if err != nil {
		return p
	}
	params["charset"] = "utf-8"
	p.ContentType, p.Data = mime.FormatMediaType(mt, params), data
	return p
}

// flatten replaces each multipart part by its parts, at every depth.
func flatten(parts []*mimePart) []*mimePart {
	var out []*mimePart
	for _, p := range parts {
		if p.children != nil {
			out = append(out, flatten(p.children)...)
		} else {
			out = append(out, p)
		}
	}
	return out
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
	raws, err := splitMultipart(data, boundary)
	if err != nil {
		return nil, err
	}
	var parts []*mimePart
	for _, raw := range raws {
		if *count++; *count > maxParts {
			return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "more than %d MIME parts", maxParts)
		}
		mp := &mimePart{header: raw.header}
		ct := raw.header.Get("Content-Type")
		if ct == "" {
			ct = "text/plain" // RFC 2045's default
		}
		mt, params, err := parseMediaType(ct)
		if err != nil {
			return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "a part's Content-Type %q: %v", truncate(ct, 80), err)
		}
		mp.contentType, mp.params = mt, params
		if mp.data, err = undoTransferEncoding(raw.header.Get("Content-Transfer-Encoding"), raw.body); err != nil {
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

// rawPart is one part of a multipart body: its header and its body, a
// slice of the body it was split from.
type rawPart struct {
	header textproto.MIMEHeader
	body   []byte
}

// splitMultipart splits a multipart body held in memory (RFC 2046) without
// copying it: parts are found between delimiter lines "--boundary", lines
// end in CRLF or in LF alone, the preamble and epilogue are ignored. A body
// without its closing delimiter is truncated: an error.
func splitMultipart(data []byte, boundary string) ([]rawPart, error) {
	delim := []byte("--" + boundary)
	// The first delimiter starts the body or a line.
	at := -1
	for from := 0; from <= len(data); {
		i := bytes.Index(data[from:], delim)
		if i < 0 {
			return nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "the multipart body has no boundary line --%s", truncate(boundary, 70))
		}
		if c := from + i; (c == 0 || data[c-1] == '\n') && isDelimiterEnd(data[c+len(delim):]) {
			at = c
			break
		}
		from += i + 1
	}
	var parts []rawPart
	for {
		rest := data[at+len(delim):]
		if bytes.HasPrefix(rest, []byte("--")) {
			return parts, nil // the closing delimiter
		}
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return nil, truncated()
		}
		start := at + len(delim) + nl + 1
		// The part ends at the line break before the next delimiter line.
		end := -1
		for from := start - 1; ; {
			i := bytes.Index(data[from:], delim)
			if i < 0 {
				return nil, truncated()
			}
			c := from + i
			if data[c-1] == '\n' && isDelimiterEnd(data[c+len(delim):]) {
				at, end = c, c-1
				break
			}
			from = c + 1
		}
		if end > start && data[end-1] == '\r' {
			end--
		}
		raw := data[start:max(start, end)]
		header, body, err := splitHeader(raw)
		if err != nil {
			return nil, err
		}
		parts = append(parts, rawPart{header, body})
	}
}

// isDelimiterEnd reports whether what follows "--boundary" makes it a
// delimiter line: "--" (the closing one), or transport padding and a line
// break, or the end of the body (then truncated, as the caller finds).
func isDelimiterEnd(rest []byte) bool {
	if len(rest) == 0 || bytes.HasPrefix(rest, []byte("--")) {
		return true
	}
	rest = bytes.TrimLeft(rest, " \t")
	return len(rest) == 0 || rest[0] == '\n' || rest[0] == '\r' && (len(rest) == 1 || rest[1] == '\n')
}

// splitHeader parses a part's header, up to the first empty line.
func splitHeader(raw []byte) (textproto.MIMEHeader, []byte, error) {
	var head, body []byte
	switch {
	case bytes.HasPrefix(raw, []byte("\r\n")):
		return textproto.MIMEHeader{}, raw[2:], nil
	case bytes.HasPrefix(raw, []byte("\n")):
		return textproto.MIMEHeader{}, raw[1:], nil
	}
	crlf, lf := bytes.Index(raw, []byte("\r\n\r\n")), bytes.Index(raw, []byte("\n\n"))
	switch {
	case crlf >= 0 && (lf < 0 || crlf < lf):
		head, body = raw[:crlf+4], raw[crlf+4:]
	case lf >= 0:
		head, body = raw[:lf+2], raw[lf+2:]
	default:
		head, body = append(bytes.Clone(raw), "\r\n\r\n"...), nil // headers only
	}
	h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(head))).ReadMIMEHeader()
	if err != nil {
		return nil, nil, decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "a part's header is malformed: %v", err)
	}
	return h, body, nil
}

func truncated() error {
	return decodeError(http.StatusBadRequest, StatusMessageFormatCorrupt, "multipart body truncated: it ends before its closing boundary")
}

func undoTransferEncoding(cte string, b []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "", "7bit", "8bit", "binary":
		return b, nil
	case "base64":
		out := make([]byte, base64.RawStdEncoding.DecodedLen(len(b))) // no smaller than StdEncoding's
		n, err := base64.StdEncoding.Decode(out, b)                   // CR and LF are skipped
		if err != nil {                                               // spaces, or padding left out
			clean := bytes.TrimRight(stripSpace(b), "=")
			n, err = base64.RawStdEncoding.Decode(out, clean)
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
