package mms

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"

	"github.com/phonebook/phonebook/mm7"
)

// MM7Submitter submits MMS to one MMSC over MM7 (mm7.Client): the parts,
// the caption as a text part and a SMIL presentation of them.
type MM7Submitter struct {
	cfg    LinkConfig
	client *mm7.Client
}

var _ Submitter = (*MM7Submitter)(nil)

// NewMM7Link returns the outbox link for an MMSC.
func NewMM7Link(cfg LinkConfig) (Link, error) {
	cfg.defaults()
	var tc *tls.Config
	if cfg.TLSCA != "" || cfg.TLSInsecureSkipVerify {
		tc = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.TLSInsecureSkipVerify} //nolint:gosec // documented: testing only
		if cfg.TLSCA != "" {
			pem, err := os.ReadFile(cfg.TLSCA)
			if err != nil {
				return Link{}, fmt.Errorf("mms %s: tls_ca: %w", cfg.Name, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return Link{}, fmt.Errorf("mms %s: tls_ca %s: no PEM certificate in it", cfg.Name, cfg.TLSCA)
			}
			tc.RootCAs = pool
		}
	}
	cc := mm7.ClientConfig{URL: cfg.URL, Username: cfg.Username, Password: cfg.Password, VASPID: cfg.VASPID, VASID: cfg.VASID,
		TLS: tc, Timeout: cfg.Timeout, Version: cfg.Version, NotCapableCodes: cfg.NotCapableCodes}
	if err := cc.Validate(); err != nil {
		return Link{}, fmt.Errorf("mms %s: %w", cfg.Name, err)
	}
	s := &MM7Submitter{cfg: cfg, client: mm7.NewClient(cc)}
	return Link{Name: cfg.Name, Prefixes: cfg.Prefixes, MaxMessageBytes: cfg.MaxMessageBytes, Submitter: s}, nil
}

// Close drops the link's idle connections.
func (s *MM7Submitter) Close() { s.client.Close() }

// MM7Parts are the MM7 parts of a submission: each media object under a
// Content-Location of its own (part1.jpg...), then the caption, with a
// SMIL presentation of them.
func MM7Parts(sub *Submission) ([]mm7.Part, []byte) {
	parts := make([]mm7.Part, 0, len(sub.Parts)+1)
	for i, p := range sub.Parts {
		parts = append(parts, mm7.Part{ContentType: p.ContentType, ContentID: fmt.Sprintf("part%d", i+1),
			ContentLocation: fmt.Sprintf("part%d%s", i+1, extension(p.ContentType)), Data: p.Data})
	}
	smil := mm7.BuildSMIL(parts, sub.Text)
	if sub.Text != "" {
		parts = append(parts, mm7.CaptionPart(sub.Text))
	}
	return parts, smil
}

// extension is a file extension for a content type, for the names of
// parts on the handset.
func extension(ct string) string {
	mt, _, _ := mime.ParseMediaType(ct)
	switch mt {
	case "image/jpeg":
		return ".jpg"
	case "image/png":
		return ".png"
	case "image/gif":
		return ".gif"
	case "audio/amr":
		return ".amr"
	case "audio/mp4":
		return ".m4a"
	case "video/3gpp":
		return ".3gp"
	case "video/mp4":
		return ".mp4"
	case "text/vcard", "text/x-vcard":
		return ".vcf"
	}
	return ""
}

// Submit sends one SubmitReq and classifies a failure: the MMSC's "not
// MMS-capable" answers (mm7.IsNotCapable), its permanent statuses, and
// temporary ones; a connection that could not be made at all is NotSent.
func (s *MM7Submitter) Submit(ctx context.Context, sub *Submission) (string, error) {
	parts, smil := MM7Parts(sub)
	from := sub.From
	if from == "" {
		from = s.cfg.SenderAddress
	}
	rsp, err := s.client.Submit(ctx, &mm7.SubmitReq{TransactionID: sub.TransactionID, ServiceCode: s.cfg.ServiceCode, SenderAddress: from, To: []string{string(sub.To)},
		Subject: sub.Subject, Parts: parts, SMIL: smil, DeliveryReport: sub.DeliveryReport, Expiry: sub.Expiry})
	if err != nil {
		return "", classifyMM7(err)
	}
	return rsp.MessageID, nil
}

func classifyMM7(err error) error {
	var se *mm7.StatusError
	switch {
	case mm7.IsNotCapable(err):
		return &SubmitError{Class: NotCapable, Err: err}
	case errors.As(err, &se) && se.Status.Permanent():
		return &SubmitError{Class: Permanent, Err: err}
	case errors.As(err, &se):
		return &SubmitError{Class: Temporary, Err: err}
	}
	return &SubmitError{Class: Temporary, NotSent: neverSent(err), Err: err}
}

// neverSent reports whether a transport error happened before a byte of
// the request left: the connection was refused or could not be made.
func neverSent(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// MOHandler takes an MMS a phone sent to the short number.
type MOHandler func(ctx context.Context, mo *mm7.DeliverReq) error

// VASPHandler is the MM7 endpoint of one link, where its MMSC posts
// delivery reports (applied to the messages submitted over that link) and
// MMS from phones (handed to mo). The link's VASPUsername and
// VASPPassword are the basic auth the MMSC must present ("" = none), its
// VASPMaxBytes the largest request taken.
func (o *Outbox) VASPHandler(lc LinkConfig, mo MOHandler, log *slog.Logger) http.Handler {
	lc.defaults()
	link := lc.Name
	if log == nil {
		log = o.log
	}
	return &mm7.Handler{
		Username: lc.VASPUsername, Password: lc.VASPPassword, MaxBytes: lc.VASPMaxBytes, Log: log,
		DeliveryReport: func(ctx context.Context, r *mm7.DeliveryReportReq) mm7.Status {
			if strings.TrimSpace(r.MessageID) == "" {
				return mm7.NewStatus(mm7.StatusValidationError, "a delivery report needs a MessageID")
			}
			if err := o.HandleReport(ctx, link, strings.TrimSpace(r.MessageID), r.MMStatus, r.StatusText); err != nil {
				o.log.Error("mms: delivery report not recorded; the MMSC will send it again", "link", link, "message_id", r.MessageID, "err", err)
				return mm7.NewStatus(mm7.StatusServerError, "not recorded, try again later")
			}
			return mm7.NewStatus(mm7.StatusSuccess, "")
		},
		Deliver: func(ctx context.Context, r *mm7.DeliverReq) mm7.Status {
			if mo == nil {
				return mm7.NewStatus(mm7.StatusUnsupportedOperation, "this VASP takes no MMS from phones")
			}
			if err := mo(ctx, r); err != nil {
				var pe interface{ Permanent() bool }
				if errors.As(err, &pe) && pe.Permanent() {
					return mm7.NewStatus(mm7.StatusValidationError, err.Error())
				}
				o.log.Error("mms: inbound MMS not taken; the MMSC will send it again", "link", link, "from", r.Sender, "err", err)
				return mm7.NewStatus(mm7.StatusServerError, "not taken, try again later")
			}
			return mm7.NewStatus(mm7.StatusSuccess, "")
		},
	}
}
