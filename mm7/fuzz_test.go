package mm7

import (
	"bytes"
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"testing"
	"time"
)

// fuzzSeeds are well-formed requests of every kind, as this package writes them.
func fuzzSeeds(f *testing.F) {
	img := Part{ContentType: "image/png", ContentID: "i", ContentLocation: "a.png", Data: []byte("\x89PNG\r\n\x1a\n0123456789")}
	parts := []Part{img, CaptionPart("hi & <bye>")}
	now := time.Unix(1700000000, 0)
	sub := &SubmitReq{TransactionID: "t1", VASPID: "v", SenderAddress: "1069", To: []string{"+8613800138000", "a@b.c"}, Subject: "s", DeliveryReport: true, Expiry: time.Hour}
	for _, v := range []string{REL5, REL6} {
		b, _ := encodeMessage(func(href string) []byte { return encodeSubmitReq(schemaOf(v), sub, now, href) }, parts, BuildSMIL(parts, "hi"))
		f.Add(b.contentType, b.data)
		b, _ = encodeMessage(func(href string) []byte { return encodeSubmitReq(schemaOf(v), sub, now, href) }, parts, nil)
		f.Add(b.contentType, b.data)
		d := &DeliverReq{TransactionID: "t2", LinkedID: "l", Sender: "+1", Recipients: []string{"1069"}, Subject: "mo"}
		b, _ = encodeMessage(func(href string) []byte { return encodeDeliverReq(schemaOf(v), d, now, href) }, parts, BuildSMIL(parts, "hi"))
		f.Add(b.contentType, b.data)
		f.Add(`text/xml; charset="utf-8"`, encodeDeliveryReportReq(schemaOf(v), &DeliveryReportReq{TransactionID: "t3", MessageID: "m", Recipient: "+1", MMStatus: "Retrieved"}, now))
		f.Add(`text/xml`, encodeSubmitRsp(schemaOf(v), &SubmitRsp{TransactionID: "t", MessageID: "m", Status: NewStatus(1000, "")}))
		f.Add(`text/xml`, encodeFault(schemaOf(v), "t", "RSErrorRsp", NewStatus(2002, "not MMS capable")))
	}
	f.Add(`multipart/related; boundary=b; start="<s>"`, []byte("--b\r\nContent-ID: <s>\r\nContent-Type: text/xml\r\n\r\n<Envelope><Body/></Envelope>\r\n--b--"))
}

// FuzzParseRequest: whatever arrives, parsing ends with a request or a
// *StatusError carrying a 4xx status and an MM7 error code; never a panic.
func FuzzParseRequest(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, contentType string, data []byte) {
		req, err := parseRequest(contentType, data)
		if err != nil {
			var se *StatusError
			if !errors.As(err, &se) || se.HTTPStatus < 400 || se.HTTPStatus > 499 || se.Status.Success() || se.Status.Details == "" {
				t.Fatalf("error %v (%T) is not a 4xx StatusError with details", err, err)
			}
			return
		}
		if req.TransactionID == "" || (req.Submit == nil) == (req.Deliver == nil) == (req.DeliveryReport == nil) {
			t.Fatalf("request %+v", req)
		}
		if req.Submit != nil && len(req.Submit.To) == 0 {
			t.Fatal("a SubmitReq without recipients was taken")
		}
	})
}

// FuzzAnswer: the client reads any answer to a success, a StatusError or
// another error; never a panic, never a success without a success status.
func FuzzAnswer(f *testing.F) {
	fuzzSeeds(f)
	c := NewClient(ClientConfig{URL: "http://127.0.0.1/"})
	f.Fuzz(func(t *testing.T, contentType string, data []byte) {
		_, env, err := decodeMessage(contentType, data)
		if err != nil {
			return
		}
		env.httpStatus = http.StatusOK
		rsp, st, err := c.answer(env, "SubmitReq", "SubmitRsp")
		if err == nil && (rsp == nil || !st.Success()) {
			t.Fatalf("success without a success status: %+v %v", rsp, st)
		}
	})
}

// FuzzSplitMultipart checks the in-memory multipart splitter against
// mime/multipart: where both read a body, they find the same parts.
func FuzzSplitMultipart(f *testing.F) {
	f.Add("b", []byte("--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\n\r\nworld\r\n--b--\r\n"))
	f.Add("b", []byte("preamble\n--b\nA: 1\n\nx\n--b \t\nB: 2\n\ny--b\n--b--"))
	f.Add("b", []byte("--b\r\n\r\n--b--"))
	f.Add("b", []byte("--b\r\nA: 1\r\n\r\nno end"))
	f.Fuzz(func(t *testing.T, boundary string, data []byte) {
		mine, err := splitMultipart(data, boundary)
		if boundary == "" || len(boundary) > 70 || err != nil {
			return
		}
		// With CRLF and bare LF mixed, mime/multipart takes the first
		// delimiter line's ending for all; we take either anywhere.
		if crlf, lf := bytes.Count(data, []byte("\r\n")), bytes.Count(data, []byte("\n")); crlf != 0 && crlf != lf {
			return
		}
		mr := multipart.NewReader(bytes.NewReader(data), boundary)
		var theirs [][]byte
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				return // mime/multipart refuses it: nothing to compare
			}
			b, err := io.ReadAll(p)
			if err != nil {
				return
			}
			theirs = append(theirs, b)
		}
		if len(theirs) != len(mine) {
			t.Fatalf("%d parts, mime/multipart finds %d", len(mine), len(theirs))
		}
		for i := range mine {
			// mime/multipart keeps the CR of a CRLF before the delimiter
			// when the first delimiter line ended in LF alone; we drop it.
			if !bytes.Equal(mine[i].body, theirs[i]) && !bytes.Equal(append(bytes.Clone(mine[i].body), '\r'), theirs[i]) {
				t.Fatalf("part %d: %q, mime/multipart: %q", i, mine[i].body, theirs[i])
			}
		}
	})
}
