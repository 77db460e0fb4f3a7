package media_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/media"
)

func TestDirBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := media.NewDirBlobs(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := "abcdefghijklmnopqrstuvwxyz"
	body := bytes.Repeat([]byte("0123456789"), 1000)
	if n, err := b.Put(ctx, id, bytes.NewReader(body)); err != nil || n != int64(len(body)) {
		t.Fatalf("put %d %v", n, err)
	}
	r, err := b.Open(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Seek(5000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(rest, body[5000:]) {
		t.Fatal("seek and read gave other bytes")
	}
	if err := b.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, id); err != nil {
		t.Fatalf("deleting twice: %v", err)
	}
	if _, err := b.Open(ctx, id); phonebook.ErrorCode(err) != phonebook.ENotFound {
		t.Fatalf("open after delete: %v", err)
	}
	// Ids that could escape the directory are not ids.
	if _, err := b.Open(ctx, "../../etc/passwd"); phonebook.ErrorCode(err) != phonebook.ENotFound {
		t.Fatalf("open ../: %v", err)
	}
	// A failed Put leaves nothing behind under the id.
	if _, err := b.Put(ctx, id, io.MultiReader(bytes.NewReader(body), errReader{})); err == nil {
		t.Fatal("put with a failing reader succeeded")
	}
	if _, err := b.Open(ctx, id); phonebook.ErrorCode(err) != phonebook.ENotFound {
		t.Fatalf("open after a failed put: %v", err)
	}
	left, _ := os.ReadDir(filepath.Join(dir, id[:2]))
	if len(left) != 0 {
		t.Fatalf("files left after a failed put: %v", left)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
