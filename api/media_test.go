package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/api"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

// mediaEnv is the API with media on, and sessions for the numbers given.
type mediaEnv struct {
	*env
	svc    *media.Service
	tokens map[string]string
	cl     *client.API
}

func newMediaEnv(t *testing.T, db *store.DB, cfg media.Config, numbers ...string) *mediaEnv {
	t.Helper()
	e := newEnvAPI(t, db, accounts.Config{DefaultRegion: "CN"}, api.Config{MaxBodyBytes: 4096})
	blobs, err := media.NewDirBlobs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	svc, err := media.New(cfg, db, blobs, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.api.EnableMedia(svc)
	me := &mediaEnv{env: e, svc: svc, tokens: map[string]string{}, cl: &client.API{BaseURL: e.srv.URL}}
	for i, n := range numbers {
		dev, sim := fmt.Sprintf("imei-%d", i), fmt.Sprintf("sim-%d", i)
		key := e.register(n, dev, sim)
		r := e.login(n, dev, sim, key, "")
		if r.Status != 200 {
			t.Fatalf("login %s: %v", n, r.Body)
		}
		me.tokens[n] = r.str("token")
	}
	return me
}

func testJPEG(t testing.TB, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 7), uint8(y * 3), uint8(x ^ y), 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func apiCode(err error) string {
	var ae *client.APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return fmt.Sprint(err)
}

const (
	nAlice = "+8613800138000"
	nBob   = "+8613900139000"
	nCarol = "+8613700137000"
)

func TestMediaUploadAndDownload(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newMediaEnv(t, db, media.Config{}, nAlice, nBob, nCarol)
		ctx := context.Background()
		photo := testJPEG(t, 400, 300)
		up, err := e.cl.UploadMedia(ctx, e.tokens[nAlice], "holiday.jpg", bytes.NewReader(photo))
		if err != nil {
			t.Fatal(err)
		}
		if !media.ValidID(up.ID) || up.ContentType != "image/jpeg" || up.Size != int64(len(photo)) || up.Width != 400 ||
			up.Height != 300 || !up.Thumbnail || up.Name != "holiday.jpg" || up.ExpiresAt.IsZero() {
			t.Fatalf("upload answer %+v", up)
		}
		download := func(who string, thumb bool, off int64) ([]byte, string, error) {
			var buf bytes.Buffer
			_, ct, err := e.cl.DownloadMedia(ctx, e.tokens[who], up.ID, thumb, off, &buf)
			return buf.Bytes(), ct, err
		}
		if got, ct, err := download(nAlice, false, 0); err != nil || !bytes.Equal(got, photo) || ct != "image/jpeg" {
			t.Fatalf("uploader downloads: %s %v", ct, err)
		}
		// Knowing the id is not enough: bob may read it only once a message carries it to him.
		if _, _, err := download(nBob, false, 0); apiCode(err) != "not_found" {
			t.Fatalf("bob before a message: %v", err)
		}
		if _, err := e.svc.Attach(ctx, "msg-1", nAlice, nBob, []string{up.ID}); err != nil {
			t.Fatal(err)
		}
		if got, _, err := download(nBob, false, 0); err != nil || !bytes.Equal(got, photo) {
			t.Fatalf("recipient downloads: %v", err)
		}
		// Resuming: the rest from byte 1000.
		if got, _, err := download(nBob, false, 1000); err != nil || !bytes.Equal(got, photo[1000:]) {
			t.Fatalf("range from 1000: %d bytes, %v", len(got), err)
		}
		thumb, ct, err := download(nBob, true, 0)
		if err != nil || ct != "image/jpeg" {
			t.Fatalf("thumbnail: %s %v", ct, err)
		}
		if img, err := jpeg.Decode(bytes.NewReader(thumb)); err != nil || img.Bounds().Dx() != 160 || img.Bounds().Dy() != 120 {
			t.Fatalf("thumbnail image: %v", err)
		}
		if _, _, err := download(nCarol, false, 0); apiCode(err) != "not_found" {
			t.Fatalf("carol: %v", err)
		}
		// Conditional and range requests, and the headers that keep a
		// browser from running what it downloads.
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/media/"+up.ID, nil)
		req.Header.Set("Authorization", "Bearer "+e.tokens[nBob])
		req.Header.Set("Range", "bytes=0-99")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		part, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 206 || !bytes.Equal(part, photo[:100]) || res.Header.Get("X-Content-Type-Options") != "nosniff" ||
			res.Header.Get("Content-Range") != fmt.Sprintf("bytes 0-99/%d", len(photo)) {
			t.Fatalf("range 0-99: %d %v", res.StatusCode, res.Header)
		}
		req.Header.Del("Range")
		req.Header.Set("If-None-Match", res.Header.Get("ETag"))
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotModified {
			t.Fatalf("If-None-Match: %d", res.StatusCode)
		}
		// Multipart upload, as a browser form sends it.
		card := "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Carol\r\nTEL:+8613700137000\r\nEND:VCARD\r\n"
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		mw.WriteField("note", "ignored")
		fw, _ := mw.CreateFormFile("file", "carol.vcf")
		fw.Write([]byte(card))
		mw.Close()
		r := e.raw("POST", "/v1/media", mw.FormDataContentType(), body.Bytes(), e.tokens[nAlice])
		if r.Status != 201 || r.str("content_type") != "text/vcard" || r.str("name") != "carol.vcf" || r.Header.Get("Location") == "" {
			t.Fatalf("multipart upload: %d %v", r.Status, r.Body)
		}
	})
}

// raw sends body as is with contentType and a session token.
func (e *mediaEnv) raw(method, path, contentType string, body []byte, token string) resp {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	return readResp(e.t, res)
}

func readResp(t *testing.T, res *http.Response) resp {
	t.Helper()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response %d is not JSON: %q", res.StatusCode, b)
	}
	return resp{Status: res.StatusCode, Body: m, Header: res.Header}
}

func TestMediaUploadBadInput(t *testing.T) {
	e := newMediaEnv(t, storetest.SQLite(t), media.Config{MaxBytes: 32 << 10}, nAlice)
	tok := e.tokens[nAlice]
	multi := func(file []byte, cut int) (string, []byte) {
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		fw, _ := mw.CreateFormFile("file", "x.jpg")
		fw.Write(file)
		mw.Close()
		b := body.Bytes()
		if cut > 0 {
			b = b[:len(b)-cut]
		}
		return mw.FormDataContentType(), b
	}
	small := testJPEG(t, 16, 16)
	bigType, big := multi(append(testJPEG(t, 8, 8), make([]byte, 40<<10)...), 0)
	cutType, cut := multi(small, 20)
	noFileType := "multipart/form-data; boundary=xyz"
	noFile := []byte("--xyz\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nhello\r\n--xyz--\r\n")
	for _, c := range []struct {
		name, ct string
		body     []byte
		token    string
		status   int
		code     string
	}{
		{"html is not a medium", "image/jpeg", []byte("<html><script>alert(1)</script></html>"), tok, 415, "unsupported_media_type"},
		{"text claimed as png", "image/png", []byte("just some text"), tok, 415, "unsupported_media_type"},
		{"oversized", "application/octet-stream", append(testJPEG(t, 8, 8), make([]byte, 40<<10)...), tok, 413, "request_too_large"},
		{"oversized multipart", bigType, big, tok, 413, "request_too_large"},
		{"truncated multipart", cutType, cut, tok, 400, "invalid_request"},
		{"multipart without a file part", noFileType, noFile, tok, 400, "invalid_request"},
		{"multipart without a boundary", "multipart/form-data", small, tok, 400, "invalid_request"},
		{"empty", "application/octet-stream", nil, tok, 400, "invalid_request"},
		{"a JPEG cut short", "image/jpeg", small[:len(small)/2], tok, 400, "invalid_request"},
		{"no session", "image/jpeg", small, "", 401, "unauthorized"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.raw("POST", "/v1/media", c.ct, c.body, c.token)
			if r.Status != c.status || r.code() != c.code {
				t.Fatalf("got %d %v, want %d %s", r.Status, r.Body, c.status, c.code)
			}
		})
	}
	t.Run("body shorter than its Content-Length", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "POST /v1/media HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", tok, len(small)+500)
		conn.Write(small)
		conn.(*net.TCPConn).CloseWrite()
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if r := readResp(t, res); r.Status != 400 || r.code() != "invalid_request" {
			t.Fatalf("got %d %v", r.Status, r.Body)
		}
	})
	t.Run("unknown and malformed ids", func(t *testing.T) {
		for _, id := range []string{"aaaaaaaaaaaaaaaaaaaaaaaaaa", "..%2F..%2Fetc%2Fpasswd", "x"} {
			r := e.raw("GET", "/v1/media/"+id, "", nil, tok)
			if r.Status != 404 || r.code() != "not_found" {
				t.Fatalf("%s: %d %v", id, r.Status, r.Body)
			}
		}
	})
}

// The per-user and per-address upload limits: one at a time, exactly the
// limit gets through; at once, never more than the limit (counting comes
// first, so concurrent uploads cannot all slip through).
func TestMediaUploadLimitsConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e := newMediaEnv(t, db, media.Config{UploadsPerHour: 5, UploadsPerAddressHour: 14}, nAlice, nBob, nCarol)
		photo := testJPEG(t, 8, 8)
		upload := func(n string) error {
			_, err := e.cl.UploadMedia(context.Background(), e.tokens[n], "", bytes.NewReader(photo))
			return err
		}
		for i := range 6 {
			err := upload(nAlice)
			if i < 5 && err != nil || i == 5 && apiCode(err) != "rate_limited" {
				t.Fatalf("alice's upload %d: %v", i+1, err)
			}
		}
		run := func(who []string, each int) (ok, limited int64) {
			var wg sync.WaitGroup
			var okN, limN atomic.Int64
			for _, n := range who {
				for range each {
					wg.Add(1)
					go func() {
						defer wg.Done()
						switch err := upload(n); {
						case err == nil:
							okN.Add(1)
						case apiCode(err) == "rate_limited":
							limN.Add(1)
						default:
							t.Errorf("upload: %v", err)
						}
					}()
				}
			}
			wg.Wait()
			return okN.Load(), limN.Load()
		}
		// Bob, 12 at once with 5 allowed; the address has 8 of its 14 left.
		if ok, lim := run([]string{nBob}, 12); ok > 5 || ok+lim != 12 {
			t.Fatalf("bob at once: %d stored, %d limited; at most 5 may be stored", ok, lim)
		}
		if err := upload(nBob); apiCode(err) != "rate_limited" {
			t.Fatalf("bob after his burst: %v", err)
		}
		// The address has used all of its 14 (refused uploads count too):
		// carol, under her own limit, is refused for the address's.
		if ok, lim := run([]string{nCarol}, 4); ok != 0 || lim != 4 {
			t.Fatalf("carol from the same address: %d stored, %d limited; want 0 and 4", ok, lim)
		}
	})
}

func TestMediaLinks(t *testing.T) {
	e := newMediaEnv(t, storetest.SQLite(t), media.Config{LinkFailuresPerAddressHour: 3, PublicURL: "https://pb.example"}, nAlice)
	ctx := context.Background()
	photo := testJPEG(t, 64, 48)
	up, err := e.svc.Upload(ctx, phonebook.MSISDN(nAlice), "", "a.jpg", bytes.NewReader(photo))
	if err != nil {
		t.Fatal(err)
	}
	link, err := e.svc.Link(ctx, "msg-1", phonebook.MSISDN(nCarol), []string{up.ID}, time.Hour)
	if err != nil || !strings.HasPrefix(link, "https://pb.example/m/") {
		t.Fatalf("link %q %v", link, err)
	}
	path := strings.TrimPrefix(link, "https://pb.example")
	get := func(p string) (int, string, http.Header) {
		res, err := http.Get(e.srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), res.Header
	}
	status, page, h := get(path)
	if status != 200 || !strings.Contains(page, path+"/0") || !strings.Contains(page, "a.jpg") || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Fatalf("page: %d %s", status, page)
	}
	if status, body, h := get(path + "/0"); status != 200 || body != string(photo) || h.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("medium: %d %s", status, h)
	}
	if status, _, h := get(path + "/0/thumbnail"); status != 200 || h.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("thumbnail: %d %s", status, h)
	}
	if status, _, _ := get(path + "/1"); status != 404 {
		t.Fatalf("second medium of a one-medium link: %d", status)
	}
	// An expired link says so.
	gone, err := e.svc.Link(ctx, "msg-2", phonebook.MSISDN(nCarol), []string{up.ID}, time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	if status, page, _ := get(strings.TrimPrefix(gone, "https://pb.example")); status != 410 || !strings.Contains(page, "expired") {
		t.Fatalf("expired link: %d %s", status, page)
	}
	// Guessing: wrong links count against the address; past the limit
	// even a right one is refused for the hour.
	for i := range 3 {
		if status, _, _ := get(fmt.Sprintf("/m/aaaaaaaaaaaaaaaaaaa%d", i)); status != 404 {
			t.Fatalf("guess %d: %d", i, status)
		}
	}
	if status, _, _ := get(path); status != 429 {
		t.Fatalf("after 3 wrong links: %d, want 429", status)
	}
}
