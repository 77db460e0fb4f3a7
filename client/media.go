package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Media describes an upload (POST /v1/media, docs/api.md#media).
type Media struct {
	ID          string    `json:"id"`
	ContentType string    `json:"content_type"` // as the server sniffed it
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	Name        string    `json:"name"`
	Width       int       `json:"width"`
	Height      int       `json:"height"`
	Thumbnail   bool      `json:"thumbnail"`
	ExpiresAt   time.Time `json:"expires_at"` // deleted then unless a message carries it
}

// UploadMedia uploads body (a photo, voice note, video or vCard; the server
// judges its type by its bytes) under the file name name, for a Send's
// media. token is the session token.
func (a *API) UploadMedia(ctx context.Context, token, name string, body io.Reader) (Media, error) {
	var m Media
	path := "/v1/media"
	if name != "" {
		path += "?name=" + url.QueryEscape(name)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.BaseURL, "/")+path, body)
	if err != nil {
		return m, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	res, err := a.send(req, token)
	if err != nil {
		return m, err
	}
	defer res.Body.Close()
	if err := checkStatus(res); err != nil {
		return m, err
	}
	return m, json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&m)
}

// DownloadMedia writes medium id (or its thumbnail) to w, resuming at
// offset bytes (a Range request; 0 = from the start), and returns the
// bytes written and the content type. A recipient may read only media a
// message carried to it.
func (a *API) DownloadMedia(ctx context.Context, token, id string, thumbnail bool, offset int64, w io.Writer) (n int64, contentType string, err error) {
	path := "/v1/media/" + url.PathEscape(id)
	if thumbnail {
		path += "/thumbnail"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(a.BaseURL, "/")+path, nil)
	if err != nil {
		return 0, "", err
	}
	if offset > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	res, err := a.send(req, token)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	if err := checkStatus(res); err != nil {
		return 0, "", err
	}
	if offset > 0 && res.StatusCode != http.StatusPartialContent {
		return 0, "", fmt.Errorf("client: asked for bytes from %d, got status %d", offset, res.StatusCode)
	}
	n, err = io.Copy(w, res.Body)
	return n, res.Header.Get("Content-Type"), err
}

func (a *API) send(req *http.Request, token string) (*http.Response, error) {
	for k, v := range a.Header {
		req.Header.Set(k, v)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc := a.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 60 * time.Second}
	}
	return hc.Do(req)
}

// checkStatus turns an error answer into an *APIError.
func checkStatus(res *http.Response) error {
	if res.StatusCode < 300 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	var e struct {
		Error APIError `json:"error"`
	}
	if json.Unmarshal(b, &e) != nil || e.Error.Code == "" {
		return &APIError{Status: res.StatusCode, Code: "http_error", Message: strings.TrimSpace(string(b))}
	}
	e.Error.Status = res.StatusCode
	return &e.Error
}
