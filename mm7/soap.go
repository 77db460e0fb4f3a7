package mm7

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/text/encoding/htmlindex"
)

// xw writes the SOAP XML by hand: the element set is small and fixed, the
// order is the schema's, and every value goes through xml.EscapeText.
type xw struct{ b bytes.Buffer }

func (w *xw) raw(s string) { w.b.WriteString(s) }

func (w *xw) open(name string)  { w.b.WriteString("<" + name + ">") }
func (w *xw) close(name string) { w.b.WriteString("</" + name + ">") }

func (w *xw) text(s string) {
	xml.EscapeText(&w.b, []byte(s))
}

// el writes <name>value</name>, nothing when value is "".
func (w *xw) el(name, value string) {
	if value == "" {
		return
	}
	w.open(name)
	w.text(value)
	w.close(name)
}

// address writes one address element: RFC2822Address with "@", Number when
// it starts with "+" or number is set, else ShortCode.
func (w *xw) address(a string, number bool) {
	switch {
	case strings.Contains(a, "@"):
		w.el("RFC2822Address", a)
	case number || strings.HasPrefix(a, "+"):
		w.el("Number", a)
	default:
		w.el("ShortCode", a)
	}
}

func (w *xw) status(s Status) {
	w.open("Status")
	w.el("StatusCode", strconv.Itoa(s.Code))
	text := s.Text
	if text == "" {
		text = statusTexts[s.Code]
	}
	w.el("StatusText", text)
	w.el("Details", s.Details)
	w.close("Status")
}

func xsdBool(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func xsdTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// schema is the namespace version and MM7Version an envelope is written in.
type schema struct{ rel, mm7v string }

// schemaOf is the schema of version v, with its MM7Version.
func schemaOf(v string) schema { return schema{v, mm7Version(v)} }

// envelope wraps a body element: op is written with the schema namespace
// as its default namespace; body writes its children.
func envelope(sc schema, txID, op string, body func(w *xw)) []byte {
	var w xw
	ns := namespace(sc.rel)
	w.raw(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	w.raw(`<env:Envelope xmlns:env="` + soapNS + `"><env:Header>`)
	w.raw(`<mm7:TransactionID xmlns:mm7="` + ns + `" env:mustUnderstand="1">`)
	w.text(txID)
	w.raw(`</mm7:TransactionID></env:Header><env:Body>`)
	if op == "Fault" {
		body(&w)
	} else {
		w.raw(`<` + op + ` xmlns="` + ns + `">`)
		w.el("MM7Version", sc.mm7v)
		body(&w)
		w.close(op)
	}
	w.raw(`</env:Body></env:Envelope>`)
	return w.b.Bytes()
}

// encodeSubmitReq writes a SubmitReq; href names the content part ("" = none).
func encodeSubmitReq(sc schema, r *SubmitReq, now time.Time, href string) []byte {
	return envelope(sc, r.TransactionID, "SubmitReq", func(w *xw) {
		w.open("SenderIdentification")
		w.el("VASPID", r.VASPID)
		w.el("VASID", r.VASID)
		if r.SenderAddress != "" {
			w.open("SenderAddress")
			w.address(r.SenderAddress, false)
			w.close("SenderAddress")
		}
		w.close("SenderIdentification")
		w.open("Recipients")
		w.open("To")
		for _, to := range r.To {
			w.address(to, true)
		}
		w.close("To")
		w.close("Recipients")
		w.el("ServiceCode", r.ServiceCode)
		w.el("LinkedID", r.LinkedID)
		w.el("MessageClass", "Personal")
		w.el("TimeStamp", xsdTime(now))
		if r.Expiry > 0 {
			w.el("ExpiryDate", xsdTime(now.Add(r.Expiry)))
		}
		w.el("DeliveryReport", xsdBool(r.DeliveryReport))
		w.el("Subject", r.Subject)
		if href != "" {
			w.raw(`<Content href="`)
			xml.EscapeText(&w.b, []byte(href))
			w.raw(`" allowAdaptations="true"/>`)
		}
	})
}

func encodeSubmitRsp(sc schema, r *SubmitRsp) []byte {
	return envelope(sc, r.TransactionID, "SubmitRsp", func(w *xw) {
		w.status(r.Status)
		w.el("MessageID", r.MessageID)
	})
}

func encodeDeliveryReportReq(sc schema, r *DeliveryReportReq, now time.Time) []byte {
	return envelope(sc, r.TransactionID, "DeliveryReportReq", func(w *xw) {
		w.el("MessageID", r.MessageID)
		w.open("Recipient")
		w.address(r.Recipient, true)
		w.close("Recipient")
		w.open("Sender")
		w.address(r.Sender, false)
		w.close("Sender")
		date := r.Date
		if date.IsZero() {
			date = now
		}
		w.el("Date", xsdTime(date))
		w.el("MMStatus", r.MMStatus)
		w.el("StatusText", r.StatusText)
	})
}

func encodeDeliverReq(sc schema, r *DeliverReq, now time.Time, href string) []byte {
	return envelope(sc, r.TransactionID, "DeliverReq", func(w *xw) {
		w.el("LinkedID", r.LinkedID)
		w.open("Sender")
		w.address(r.Sender, true)
		w.close("Sender")
		w.open("Recipients")
		w.open("To")
		for _, to := range r.Recipients {
			w.address(to, false)
		}
		w.close("To")
		w.close("Recipients")
		received := r.Received
		if received.IsZero() {
			received = now
		}
		w.el("TimeStamp", xsdTime(received))
		w.el("Subject", r.Subject)
		if href != "" {
			w.raw(`<Content href="`)
			xml.EscapeText(&w.b, []byte(href))
			w.raw(`"/>`)
		}
	})
}

// encodeStatusRsp writes DeliverRsp, DeliveryReportRsp (op) with a status.
func encodeStatusRsp(sc schema, txID, op string, st Status) []byte {
	return envelope(sc, txID, op, func(w *xw) { w.status(st) })
}

// encodeFault writes a SOAP fault carrying an MM7 error response (detail
// is "RSErrorRsp" from an MMSC, "VASPErrorRsp" from a VASP).
func encodeFault(sc schema, txID, detail string, st Status) []byte {
	code := "env:Server"
	if st.Permanent() {
		code = "env:Client"
	}
	return envelope(sc, txID, "Fault", func(w *xw) {
		w.raw(`<env:Fault><faultcode>` + code + `</faultcode>`)
		w.el("faultstring", st.String())
		w.raw(`<detail><` + detail + ` xmlns="` + namespace(sc.rel) + `">`)
		w.el("MM7Version", sc.mm7v)
		w.status(st)
		w.raw(`</` + detail + `></detail></env:Fault>`)
	})
}

// Decoding: element names are matched by local name, whatever the prefix
// or namespace, as real MMSCs vary; the schema version is taken from the
// namespace of the body's element (or the TransactionID's).

type xAddrs struct {
	Text           string   `xml:",chardata"` // REL-5-MM7-1-0 wrote bare addresses
	Number         []string `xml:"Number"`
	ShortCode      []string `xml:"ShortCode"`
	RFC2822Address []string `xml:"RFC2822Address"`
}

func (a *xAddrs) list() []string {
	var out []string
	for _, group := range [][]string{a.Number, a.ShortCode, a.RFC2822Address} {
		for _, s := range group {
			if s = cleanAddress(s); s != "" {
				out = append(out, s)
			}
		}
	}
	if s := cleanAddress(a.Text); s != "" && len(out) == 0 {
		out = append(out, s)
	}
	return out
}

func (a *xAddrs) first() string {
	if l := a.list(); len(l) > 0 {
		return l[0]
	}
	return ""
}

// cleanAddress trims an address and the MM1-style "/TYPE=PLMN" suffix.
func cleanAddress(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.Index(strings.ToUpper(s), "/TYPE="); i >= 0 {
		s = s[:i]
	}
	return s
}

type xRecipients struct {
	To  []xAddrs `xml:"To"`
	Cc  []xAddrs `xml:"Cc"`
	Bcc []xAddrs `xml:"Bcc"`
}

// all is To, Cc and Bcc together.
func (r *xRecipients) all() []string {
	var out []string
	for _, group := range [][]xAddrs{r.To, r.Cc, r.Bcc} {
		for i := range group {
			out = append(out, group[i].list()...)
		}
	}
	return out
}

type xStatus struct {
	StatusCode string
	StatusText string
	Details    string `xml:"Details"`
}

func (x *xStatus) status() (Status, error) {
	code, err := strconv.Atoi(strings.TrimSpace(x.StatusCode))
	if err != nil {
		return Status{}, fmt.Errorf("StatusCode %q is not a number", truncate(x.StatusCode, 40))
	}
	return Status{Code: code, Text: strings.TrimSpace(x.StatusText), Details: strings.TrimSpace(x.Details)}, nil
}

type xContent struct {
	Href string `xml:"href,attr"`
}

type xSubmitReq struct {
	XMLName              xml.Name
	MM7Version           string
	SenderIdentification struct {
		VASPID        string
		VASID         string
		SenderAddress xAddrs
	}
	Recipients     xRecipients
	ServiceCode    string
	LinkedID       string
	TimeStamp      string
	ExpiryDate     string
	DeliveryReport string
	Subject        string
	Content        *xContent
}

type xDeliverReq struct {
	XMLName    xml.Name
	MM7Version string
	LinkedID   string
	Sender     xAddrs
	Recipients xRecipients
	TimeStamp  string
	Subject    string
	Content    *xContent
}

type xDeliveryReportReq struct {
	XMLName      xml.Name
	MM7Version   string
	MessageID    string
	Recipient    xAddrs
	Sender       xAddrs
	Date         string
	MMStatus     string
	StatusText   string
	MMStatusText string // REL-6 spelling
}

type xRsp struct {
	XMLName    xml.Name
	MM7Version string
	Status     *xStatus
	MessageID  string
	// Some MMSCs put the status fields straight into an RSErrorRsp.
	StatusCode string
	StatusText string
	Details    string
}

func (x *xRsp) status() (Status, error) {
	if x.Status != nil {
		return x.Status.status()
	}
	if x.StatusCode != "" {
		return (&xStatus{StatusCode: x.StatusCode, StatusText: x.StatusText, Details: x.Details}).status()
	}
	return Status{}, fmt.Errorf("%s has no Status", x.XMLName.Local)
}

type xFault struct {
	FaultCode   string `xml:"faultcode"`
	FaultString string `xml:"faultstring"`
	Detail      struct {
		Rsp []xRsp `xml:",any"`
	} `xml:"detail"`
}

type xEnvelope struct {
	XMLName xml.Name
	Header  struct {
		TransactionID []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:"TransactionID"`
	} `xml:"Header"`
	Body *struct {
		Fault             *xFault             `xml:"Fault"`
		SubmitReq         *xSubmitReq         `xml:"SubmitReq"`
		DeliverReq        *xDeliverReq        `xml:"DeliverReq"`
		DeliveryReportReq *xDeliveryReportReq `xml:"DeliveryReportReq"`
		Rsp               []xRsp              `xml:",any"` // SubmitRsp, DeliverRsp, RSErrorRsp ...
	} `xml:"Body"`
}

// envelopeIn is a decoded SOAP envelope.
type envelopeIn struct {
	x       xEnvelope
	op      string // the body element's local name
	version string // e.g. "REL-5-MM7-1-2" from its namespace; "" when unknown
	txID    string

	httpStatus int // of the answer carrying it (client side)
}

// charsetReader lets the XML declare any charset the WHATWG encoding
// registry knows (MMSCs answer in GBK, EUC-KR, ISO-8859-1 ...).
func charsetReader(label string, in io.Reader) (io.Reader, error) {
	enc, err := htmlindex.Get(label)
	if err != nil {
		return nil, fmt.Errorf("unknown charset %q", truncate(label, 40))
	}
	return enc.NewDecoder().Reader(in), nil
}

// decodeEnvelope parses a SOAP envelope; errors say what is wrong with it.
func decodeEnvelope(b []byte) (*envelopeIn, error) {
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.CharsetReader = charsetReader
	var e envelopeIn
	if err := dec.Decode(&e.x); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("the SOAP part is empty")
		}
		return nil, fmt.Errorf("the SOAP part is not well-formed XML: %v", err)
	}
	if e.x.XMLName.Local != "Envelope" {
		return nil, fmt.Errorf("the SOAP part's root element is <%s>, not a SOAP Envelope", truncate(e.x.XMLName.Local, 40))
	}
	if e.x.XMLName.Space != "" && e.x.XMLName.Space != soapNS {
		return nil, fmt.Errorf("the Envelope's namespace %q is not SOAP 1.1's (%s)", truncate(e.x.XMLName.Space, 80), soapNS)
	}
	if e.x.Body == nil {
		return nil, fmt.Errorf("the SOAP Envelope has no Body")
	}
	if len(e.x.Header.TransactionID) > 0 {
		t := e.x.Header.TransactionID[0]
		e.txID = strings.TrimSpace(t.Value)
		e.version = versionOf(t.XMLName.Space)
	}
	body := e.x.Body
	var name xml.Name
	switch {
	case body.Fault != nil:
		e.op = "Fault"
	case body.SubmitReq != nil:
		name = body.SubmitReq.XMLName
	case body.DeliverReq != nil:
		name = body.DeliverReq.XMLName
	case body.DeliveryReportReq != nil:
		name = body.DeliveryReportReq.XMLName
	case len(body.Rsp) > 0:
		name = body.Rsp[0].XMLName
	default:
		return nil, fmt.Errorf("the SOAP Body is empty")
	}
	if e.op == "" {
		e.op = name.Local
		if v := versionOf(name.Space); v != "" {
			e.version = v
		}
	}
	return &e, nil
}

// versionOf is the schema version in an MM7 namespace, "" for another one.
func versionOf(ns string) string {
	v, ok := strings.CutPrefix(ns, nsBase)
	if !ok || !(strings.HasPrefix(v, "REL-5-MM7-") || strings.HasPrefix(v, "REL-6-MM7-")) || len(v) > 20 {
		return ""
	}
	return v
}

// parseTime reads an xsd:dateTime leniently; zero when it cannot.
func parseTime(s string) time.Time {
	s = strings.TrimSpace(s)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05Z0700", "2006-01-02T15:04:05", "2006-01-02 15:04:05"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t
		}
	}
	return time.Time{}
}

func parseBool(s string) bool {
	s = strings.TrimSpace(s)
	return s == "true" || s == "1"
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
