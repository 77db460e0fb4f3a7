package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// DirBlobs keeps bodies as files in one directory (the single-node
// default): id "abc..." lives at Dir/ab/abc.... A body is written to a
// temporary file and renamed into place, so a crash never leaves half a
// body under its id.
type DirBlobs struct {
	Dir string
}

var _ Blobs = DirBlobs{}

// NewDirBlobs creates dir if needed.
func NewDirBlobs(dir string) (DirBlobs, error) {
	if dir == "" {
		return DirBlobs{}, errors.New("media: directory is empty")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return DirBlobs{}, fmt.Errorf("media: %w", err)
	}
	return DirBlobs{Dir: dir}, nil
}

func (d DirBlobs) path(id string) (string, error) {
	if !validBlobName(id) {
		return "", ErrNoBlob
	}
	return filepath.Join(d.Dir, id[:2], id), nil
}

// Put implements Blobs.
func (d DirBlobs) Put(ctx context.Context, id string, r io.Reader) (int64, error) {
	p, err := d.path(id)
	if err != nil {
		return 0, fmt.Errorf("media: bad id %q", id)
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
		return 0, fmt.Errorf("media: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".up-*")
	if err != nil {
		return 0, fmt.Errorf("media: %w", err)
	}
	n, err := io.Copy(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = ctx.Err()
	}
	if err == nil {
		err = os.Rename(f.Name(), p)
	}
	if err != nil {
		os.Remove(f.Name())
		return 0, fmt.Errorf("media: storing %s: %w", id, err)
	}
	return n, nil
}

// Open implements Blobs.
func (d DirBlobs) Open(ctx context.Context, id string) (io.ReadSeekCloser, error) {
	p, err := d.path(id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoBlob
	}
	if err != nil {
		return nil, fmt.Errorf("media: %w", err)
	}
	return f, nil
}

// Delete implements Blobs.
func (d DirBlobs) Delete(ctx context.Context, id string) error {
	p, err := d.path(id)
	if err != nil {
		return nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("media: %w", err)
	}
	return nil
}
