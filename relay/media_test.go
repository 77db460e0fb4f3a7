package relay_test

import (
	"bytes"
	"context"
	"image"
	"image/jpeg"
	"sync"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store"
	"github.com/phonebook/phonebook/store/storetest"
)

func photo(t *testing.T) []byte {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, image.NewGray(image.Rect(0, 0, 320, 200)), nil); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mediaEnv(t *testing.T, db *store.DB) (*env, *media.Service) {
	var svc *media.Service
	e := startWithMedia(t, testConfig(), db, func(db *store.DB) relay.Media {
		blobs, err := media.NewDirBlobs(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if svc, err = media.New(media.Config{MaxPerMessage: 2}, db, blobs, nil); err != nil {
			t.Fatal(err)
		}
		return svc
	})
	return e, svc
}

// A photo goes online and offline with its caption; the Deliver carries
// the whole MediaRef and the recipient, and only the recipient, may then
// read it; the chat record keeps it.
func TestMediaMessageOnlineAndOffline(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e, svc := mediaEnv(t, db)
		ctx := context.Background()
		up, err := svc.Upload(ctx, alice, "", "cat.jpg", bytes.NewReader(photo(t)))
		if err != nil {
			t.Fatal(err)
		}
		a := e.alice(client.Options{})
		b := e.bob(client.Options{AutoAck: true})
		p, _ := a.SendMsg(&relaypb.Send{ClientMsgId: "m1", To: string(bob), Text: "my cat", Media: []*relaypb.MediaRef{{Id: up.ID}}})
		id, state := wait(t, p)
		if state != "DELIVERED" {
			t.Fatalf("state %s", state)
		}
		d := next(t, b.Deliveries(), "media delivery")
		if d.Text != "my cat" || d.Type != relaypb.MessageType_IMAGE || len(d.Media) != 1 {
			t.Fatalf("deliver %v", d)
		}
		if r := d.Media[0]; r.Id != up.ID || r.ContentType != "image/jpeg" || r.Size != uint64(up.Size) || r.Name != "cat.jpg" ||
			r.Width != 320 || r.Height != 200 || !r.Thumbnail {
			t.Fatalf("media ref %v", r)
		}
		if err := svc.Readable(ctx, up.ID, bob); err != nil {
			t.Fatalf("bob after delivery: %v", err)
		}
		if err := svc.Readable(ctx, up.ID, carol); phonebook.ErrorCode(err) != phonebook.ENotFound {
			t.Fatalf("carol: %v", err)
		}
		waitFor(t, "chat record with media", func() bool {
			rec, err := db.ChatRecord(ctx, id)
			return err == nil && len(rec.Media) == 1 && rec.Media[0].ID == up.ID && rec.Media[0].ContentType == "image/jpeg"
		})

		// Offline: carol (registered, not connected) gets it at login.
		e.auth.add("tok-carol", carol, "dev-carol")
		voice, err := svc.Upload(ctx, alice, "", "", bytes.NewReader([]byte("#!AMR\n\x3c\x48\xf5\x1f\x00")))
		if err != nil {
			t.Fatal(err)
		}
		p, _ = a.SendMsg(&relaypb.Send{ClientMsgId: "m2", To: string(carol), Media: []*relaypb.MediaRef{{Id: voice.ID}, {Id: up.ID}}})
		if _, state := wait(t, p); state != "STORED" {
			t.Fatalf("offline state %s", state)
		}
		c := e.dial("tok-carol", "dev-carol", client.Options{AutoAck: true})
		d = next(t, c.Deliveries(), "offline media delivery")
		if !d.Offline || d.Type != relaypb.MessageType_AUDIO || len(d.Media) != 2 || d.Media[0].ContentType != "audio/amr" ||
			d.Media[1].Id != up.ID || d.Media[1].Width != 320 {
			t.Fatalf("offline deliver %v", d)
		}
		for _, id := range []string{voice.ID, up.ID} {
			if err := svc.Readable(ctx, id, carol); err != nil {
				t.Fatalf("carol reads %s: %v", id, err)
			}
		}
	})
}

func TestMediaSendRefused(t *testing.T) {
	e, svc := mediaEnv(t, nil)
	ctx := context.Background()
	mine, err := svc.Upload(ctx, alice, "", "", bytes.NewReader(photo(t)))
	if err != nil {
		t.Fatal(err)
	}
	bobs, err := svc.Upload(ctx, bob, "", "", bytes.NewReader(photo(t)))
	if err != nil {
		t.Fatal(err)
	}
	a := e.alice(client.Options{})
	for _, c := range []struct {
		name  string
		media []*relaypb.MediaRef
		code  phonebook.Code
	}{
		{"unknown id", []*relaypb.MediaRef{{Id: "aaaaaaaaaaaaaaaaaaaaaaaaaa"}}, phonebook.ENotFound},
		{"malformed id", []*relaypb.MediaRef{{Id: "../../etc/passwd"}}, phonebook.ENotFound},
		{"someone else's upload", []*relaypb.MediaRef{{Id: bobs.ID}}, phonebook.ENotFound},
		{"one good, one not", []*relaypb.MediaRef{{Id: mine.ID}, {Id: bobs.ID}}, phonebook.ENotFound},
		{"the same twice", []*relaypb.MediaRef{{Id: mine.ID}, {Id: mine.ID}}, phonebook.EInvalid},
		{"over media.max_per_message", []*relaypb.MediaRef{{Id: mine.ID}, {Id: mine.ID}, {Id: mine.ID}}, phonebook.EInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, _ := a.SendMsg(&relaypb.Send{ClientMsgId: c.name, To: string(bob), Media: c.media})
			r, err := p.Wait(ctx)
			if err != nil || r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(c.code) {
				t.Fatalf("result %v %v, want FAILED %s", r, err, c.code)
			}
		})
	}
	// Nothing refused made bob a reader of alice's upload.
	if err := svc.Readable(ctx, mine.ID, bob); phonebook.ErrorCode(err) != phonebook.ENotFound {
		t.Fatalf("bob after refusals: %v", err)
	}
	// A refused send is not remembered: the same id with good media goes.
	p, _ := a.SendMsg(&relaypb.Send{ClientMsgId: "unknown id", To: string(bob), Media: []*relaypb.MediaRef{{Id: mine.ID}}})
	if _, state := wait(t, p); state != "STORED" && state != "DELIVERED" {
		t.Fatalf("retry with good media: %s", state)
	}
}

func TestMediaRefusedWithoutMediaService(t *testing.T) {
	e := start(t, testConfig(), nil)
	a := e.alice(client.Options{})
	p, _ := a.SendMsg(&relaypb.Send{ClientMsgId: "x", To: string(bob), Media: []*relaypb.MediaRef{{Id: "aaaaaaaaaaaaaaaaaaaaaaaaaa"}}})
	r, err := p.Wait(context.Background())
	if err != nil || r.State != relaypb.MessageState_FAILED || r.Error.GetCode() != string(phonebook.EInvalid) {
		t.Fatalf("result %v %v", r, err)
	}
}

// A message with media to a number without the app reaches the fallback
// with its media described and its caption unformatted: the fallback
// chooses MMS or an SMS with a link.
func TestMediaFallbackCarriesMedia(t *testing.T) {
	e, svc := mediaEnv(t, nil)
	ctx := context.Background()
	up, err := svc.Upload(ctx, alice, "", "beach.jpg", bytes.NewReader(photo(t)))
	if err != nil {
		t.Fatal(err)
	}
	a := e.alice(client.Options{})
	p, _ := a.SendMsg(&relaypb.Send{ClientMsgId: "f1", To: string(carol), Text: "the beach", Media: []*relaypb.MediaRef{{Id: up.ID}}})
	id, state := wait(t, p)
	if state != "STORED" {
		t.Fatalf("state %s", state)
	}
	waitFor(t, "fallback", func() bool { return len(e.fallback.all()) == 1 })
	sms := e.fallback.all()[0]
	if sms.MessageID != id || sms.Caption != "the beach" || len(sms.Media) != 1 || sms.Media[0].Id != up.ID ||
		sms.Media[0].ContentType != "image/jpeg" || sms.Media[0].Size != uint64(up.Size) || sms.Media[0].Name != "beach.jpg" {
		t.Fatalf("fallback %+v", sms)
	}
}

// An operator's MMS injected again under its key (the MMSC repeating a
// DeliverReq whose answer it lost) is stored once, however many repeats
// arrive at once; a new key is a new message.
func TestInjectMMSRepeatsStoredOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *store.DB) {
		e, svc := mediaEnv(t, db)
		ctx := context.Background()
		up, err := svc.Upload(ctx, carol, "mmsc:a", "c.jpg", bytes.NewReader(photo(t)))
		if err != nil {
			t.Fatal(err)
		}
		// Bob is offline: the messages are stored.
		const repeats = 50
		ids := make(chan string, repeats)
		errs := make(chan error, repeats)
		var wg sync.WaitGroup
		for range repeats {
			wg.Go(func() {
				id, err := e.srv.InjectMMS(ctx, "mm7:a:+8613700137000:t-1", carol, bob, "from carol", []string{up.ID})
				if err != nil {
					errs <- err
				}
				ids <- id
			})
		}
		wg.Wait()
		close(ids)
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		first := ""
		for id := range ids {
			if first == "" {
				first = id
			}
			if id != first || id == "" {
				t.Fatalf("repeats answered ids %q and %q", first, id)
			}
		}
		if seen, err := e.srv.Injected(ctx, "mm7:a:+8613700137000:t-1"); err != nil || !seen {
			t.Fatalf("Injected = %v, %v", seen, err)
		}
		if seen, _ := e.srv.Injected(ctx, "mm7:a:+8613700137000:t-2"); seen {
			t.Fatal("a key never injected is reported injected")
		}
		if _, err := e.srv.InjectMMS(ctx, "mm7:a:+8613700137000:t-2", carol, bob, "carol again", []string{up.ID}); err != nil {
			t.Fatal(err)
		}
		msgs, err := db.OfflineMessages(ctx, bob, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != 2 || msgs[0].ID != first || msgs[0].Text != "from carol" || msgs[1].Text != "carol again" {
			t.Fatalf("stored for bob: %+v; want the first MMS once, then the second", msgs)
		}
	})
}
