package mms

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/mm7"
)

// MORouter finds the IM user a message from a phone without the app, sent
// to the short number, answers; smsreply.Service.RouteReply is one.
type MORouter interface {
	RouteReply(ctx context.Context, number phonebook.MSISDN, to, text string) (user phonebook.MSISDN, rest string, found bool, err error)
}

// MOMedia stores the media of an inbound MMS as uploads of the phone that
// sent it; an adapter over media.Service.Upload is one. It returns the
// media id; an error with code invalid_request, unsupported_media_type or
// request_too_large refuses that one part.
type MOMedia interface {
	Upload(ctx context.Context, owner phonebook.MSISDN, addrKey, name string, body io.Reader) (string, error)
}

// MORelay takes the message for the IM user; relay.Server is one. key
// names the operator's message: one injected again under the same key
// (the MMSC sending it again because our answer was lost) is not
// delivered twice, and Injected tells that before its media are taken.
type MORelay interface {
	InjectMMS(ctx context.Context, key string, from, to phonebook.MSISDN, text string, mediaIDs []string) (string, error)
	Injected(ctx context.Context, key string) (bool, error)
}

// Inbound turns MMS that phones send to the short number (MM7 DeliverReq)
// into IM messages with media for the IM user the conversation belongs
// to, routed like SMS replies (smsreply).
type Inbound struct {
	region string
	router MORouter
	media  MOMedia
	relay  atomic.Pointer[MORelay]
	log    *slog.Logger
	count  *prometheus.CounterVec
}

// NewInbound returns the inbound MMS handler. reg may be nil.
func NewInbound(region string, router MORouter, media MOMedia, log *slog.Logger, reg prometheus.Registerer) (*Inbound, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	in := &Inbound{region: region, router: router, media: media, log: log.With("component", "mms-inbound"),
		count: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "phonebook_mms_inbound_total",
			Help: "MMS from phones to the short number, by result: delivered (to the IM user), duplicate (sent again by the MMSC, delivered before), no_conversation, invalid, failed (retried by the MMSC)."},
			[]string{"result"})}
	if reg != nil {
		if err := reg.Register(in.count); err != nil {
			return nil, fmt.Errorf("mms: inbound metrics: %w", err)
		}
	}
	return in, nil
}

// SetRelay connects the relay; until then inbound MMS are refused with a
// temporary error, so that the MMSC delivers them again later.
func (in *Inbound) SetRelay(r MORelay) { in.relay.Store(&r) }

// refused is an inbound MMS that sending again would not help.
type refused struct{ error }

func (refused) Permanent() bool { return true }

// Handler returns the MOHandler for the MM7 endpoint of link.
func (in *Inbound) Handler(link string) MOHandler {
	return func(ctx context.Context, r *mm7.DeliverReq) error {
		err := in.handle(ctx, link, r)
		switch {
		case err == nil:
		case isRefused(err):
			in.count.WithLabelValues("invalid").Inc()
			in.log.Info("inbound MMS refused", "link", link, "from", r.Sender, "err", err)
		default:
			in.count.WithLabelValues("failed").Inc()
		}
		return err
	}
}

func isRefused(err error) bool {
	_, ok := err.(refused)
	return ok
}

func (in *Inbound) handle(ctx context.Context, link string, r *mm7.DeliverReq) error {
	from, err := phonebook.NormalizeMSISDN(r.Sender, in.region)
	if err != nil {
		return refused{fmt.Errorf("sender %q: %s", r.Sender, phonebook.ErrorMessage(err))}
	}
	if len(r.Recipients) == 0 {
		return refused{fmt.Errorf("no recipient")}
	}
	text, media := splitParts(r.Parts)
	if text == "" && r.Subject != "" {
		text = r.Subject
	}
	user, rest, found, err := in.router.RouteReply(ctx, from, r.Recipients[0], text)
	if err != nil {
		return err
	}
	if !found {
		in.count.WithLabelValues("no_conversation").Inc()
		in.log.Info("inbound MMS to the short number from someone nobody wrote to: acknowledged, dropped", "link", link, "from", from, "to", r.Recipients[0])
		return nil
	}
	rp := in.relay.Load()
	if rp == nil {
		return phonebook.Errorf(phonebook.EUnavailable, "the relay is not running: the MMSC delivers the MMS again later")
	}
	// An MMSC that lost our answer sends the same DeliverReq again, with
	// its TransactionID: the IM user gets it once.
	key := "mm7:" + link + ":" + string(from) + ":" + r.TransactionID
	if r.TransactionID == "" {
		key = ""
	} else if seen, err := (*rp).Injected(ctx, key); err != nil {
		return err
	} else if seen {
		in.count.WithLabelValues("duplicate").Inc()
		in.log.Info("inbound MMS sent again by the MMSC: acknowledged, already delivered", "link", link, "from", from, "transaction_id", r.TransactionID)
		return nil
	}
	var ids []string
	for _, p := range media {
		id, err := in.media.Upload(ctx, from, "mmsc:"+link, p.name, bytes.NewReader(p.Data))
		if err != nil {
			switch phonebook.ErrorCode(err) {
			case phonebook.EInvalid, phonebook.EMediaType, phonebook.ETooLarge:
				in.log.Info("inbound MMS part not carried", "from", from, "type", p.ContentType, "bytes", len(p.Data), "err", err)
				continue
			}
			return err
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 && strings.TrimSpace(rest) == "" {
		return refused{fmt.Errorf("nothing in it that an IM client can show")}
	}
	if _, err := (*rp).InjectMMS(ctx, key, from, user, rest, ids); err != nil {
		return err
	}
	in.count.WithLabelValues("delivered").Inc()
	return nil
}

type moPart struct {
	mm7.Part
	name string
}

// splitParts separates an MMS's text (its text/plain parts, joined) from
// its media; the presentation (SMIL) is dropped.
func splitParts(parts []mm7.Part) (string, []moPart) {
	var texts []string
	var media []moPart
	for i, p := range parts {
		mt, params, _ := mime.ParseMediaType(p.ContentType)
		switch {
		case mt == "application/smil":
		case mt == "text/plain":
			if cs := strings.ToLower(params["charset"]); (cs == "" || cs == "utf-8" || cs == "us-ascii") && utf8.Valid(p.Data) {
				if t := strings.TrimSpace(string(p.Data)); t != "" {
					texts = append(texts, t)
				}
				continue
			}
			media = append(media, moPart{p, partName(p, i)})
		default:
			media = append(media, moPart{p, partName(p, i)})
		}
	}
	return strings.Join(texts, "\n"), media
}

// partName is a file name for an inbound part: its Content-Location when
// that looks like one, else part<n> and the type's extension.
func partName(p mm7.Part, i int) string {
	name := p.ContentLocation
	if j := strings.LastIndexAny(name, "/\\"); j >= 0 {
		name = name[j+1:]
	}
	if name != "" && len(name) <= 64 && !strings.ContainsAny(name, ":<>\"|?*") {
		return name
	}
	return fmt.Sprintf("part%d%s", i+1, extension(p.ContentType))
}
