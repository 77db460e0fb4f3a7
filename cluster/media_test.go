package cluster_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/cluster/clustertest"
	"github.com/phonebook/phonebook/media"
	"github.com/phonebook/phonebook/store/storetest"
)

func mediaBlobs(t *testing.T, url string) *cluster.MediaBlobs {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := cluster.NewMediaBlobs(context.Background(), js, "test-media", 1, false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A body one node stores, another reads, seeks in and deletes; the media
// service on two nodes over one database and one bucket serves an upload
// made through the other.
func TestMediaBlobsAcrossConnections(t *testing.T) {
	ns := clustertest.StartNATS(t)
	a, b := mediaBlobs(t, ns.URL()), mediaBlobs(t, ns.URL())
	ctx := context.Background()
	id := "abcdefghijklmnopqrstuvwxyz"
	body := bytes.Repeat([]byte("phonebook media "), 40000) // 640 kB: several chunks
	if n, err := a.Put(ctx, id, bytes.NewReader(body)); err != nil || n != int64(len(body)) {
		t.Fatalf("put %d %v", n, err)
	}
	r, err := b.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Seek(100000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(rest, body[100000:]) {
		t.Fatal("read through the other connection gave other bytes")
	}
	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, id); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := a.Open(ctx, id); phonebook.ErrorCode(err) != phonebook.ENotFound {
		t.Fatalf("open after delete: %v", err)
	}

	// Two nodes' media services: uploaded on A, attached and read on B.
	db := storetest.SQLite(t)
	svcA, err := media.New(media.Config{}, db, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	svcB, _ := media.New(media.Config{}, db, b, nil)
	alice, bob := phonebook.MSISDN("+8613800138000"), phonebook.MSISDN("+8613900139000")
	card := []byte("BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Carol\r\nTEL:+8613700137000\r\nEND:VCARD\r\n")
	up, err := svcA.Upload(ctx, alice, "", "carol.vcf", bytes.NewReader(card))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svcB.Attach(ctx, "m1", alice, bob, []string{up.ID}); err != nil {
		t.Fatal(err)
	}
	rc, info, err := svcB.OpenFor(ctx, up.ID, bob, false)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, card) || info.ContentType != "text/vcard" {
		t.Fatalf("node B served %q (%s)", got, info.ContentType)
	}
}
