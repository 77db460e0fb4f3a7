package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/store/storetest"
)

// BenchmarkMediaUploadAndDelivery measures media through a whole server:
// each operation uploads a photo over HTTP (type sniffed, decoded,
// thumbnailed, stored), sends it over the relay to an online phone, which
// gets the Deliver and downloads the photo over HTTP. 16 pairs of phones
// at once; MiB/s counts each photo once (uploaded, and downloaded). SQLite and a media directory by
// default; MariaDB with PHONEBOOK_TEST_MYSQL_DSN set. PB_MEDIA_KIB sets
// the photo's size (default about 200 KiB).
//
//	go test -run '^$' -bench MediaUploadAndDelivery -benchtime 2000x ./cmd/phonebook
func BenchmarkMediaUploadAndDelivery(b *testing.B) {
	const pairs = 16
	cfg := testConfigTB(b)
	if os.Getenv(storetest.EnvDSN) != "" {
		cfg.Database.Driver, cfg.Database.DSN = "mysql", storetest.MySQLDSN(b)
	}
	cfg.Media.UploadsPerHour, cfg.Media.UploadsPerAddressHour = 1<<30, 1<<30
	cfg.Relay.MaxMsgsPerSecond = 1 << 20
	m := NewMain(cfg, quietLogger())
	m.SimOutput = discard{}
	if err := m.Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	photo := benchPhoto(b)
	type pair struct {
		from, to       *client.Client
		fromTok, toTok string
		toNumber       string
	}
	ps := make([]pair, pairs)
	for i := range ps {
		a, bn := fmt.Sprintf("136%08d", i), fmt.Sprintf("137%08d", i)
		at, ad := account(b, m.HTTPAddr(), a)
		bt, bd := account(b, m.HTTPAddr(), bn)
		ps[i] = pair{from: dialRelay(b, m.RelayAddr(), at, ad), to: dialRelay(b, m.RelayAddr(), bt, bd), fromTok: at, toTok: bt, toNumber: bn}
	}
	api := &client.API{BaseURL: "http://" + m.HTTPAddr()}
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(max(1, pairs/runtime.GOMAXPROCS(0))) // one goroutine per pair
	b.ResetTimer()
	t0, cpu0 := time.Now(), cpuTime()
	var moved atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		p := ps[int(next.Add(1)-1)%pairs]
		for pb.Next() {
			up, err := api.UploadMedia(ctx, p.fromTok, "photo.jpg", bytes.NewReader(photo))
			if err != nil {
				b.Error(err)
				return
			}
			pend, err := p.from.SendMsg(&relaypb.Send{ClientMsgId: p.from.NewClientMsgID(), To: p.toNumber, Media: []*relaypb.MediaRef{{Id: up.ID}}})
			if err != nil {
				b.Error(err)
				return
			}
			if res, err := pend.Wait(ctx); err != nil || res.State == relaypb.MessageState_FAILED {
				b.Errorf("send: %v %v", res, err)
				return
			}
			d := <-p.to.Deliveries()
			n, _, err := api.DownloadMedia(ctx, p.toTok, d.Media[0].Id, false, 0, io.Discard)
			if err != nil || n != int64(len(photo)) {
				b.Errorf("download: %d %v", n, err)
				return
			}
			moved.Add(n)
		}
	})
	secs := time.Since(t0).Seconds()
	b.ReportMetric(float64(moved.Load())/(1<<20)/secs, "MiB/s")
	b.ReportMetric(float64(b.N)/secs, "media/s")
	// CPU per medium, server and phones together: steadier than wall
	// time on a shared machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

// benchPhoto is a JPEG of about PB_MEDIA_KIB KiB (noise compresses badly).
func benchPhoto(b *testing.B) []byte {
	kib := 200
	fmt.Sscan(os.Getenv("PB_MEDIA_KIB"), &kib)
	r := rand.New(rand.NewPCG(1, 2))
	side := 64
	for {
		img := image.NewRGBA(image.Rect(0, 0, side, side))
		for i := range img.Pix {
			img.Pix[i] = uint8(r.IntN(256))
		}
		img.Set(0, 0, color.Black)
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
			b.Fatal(err)
		}
		if buf.Len() >= kib<<10 || side > 4000 {
			return buf.Bytes()
		}
		side = side * 5 / 4
	}
}
