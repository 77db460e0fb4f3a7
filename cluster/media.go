package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/phonebook/phonebook/media"
)

// MediaBlobs keeps media bodies in a JetStream Object Store bucket, so
// that a medium uploaded through one node is served by every other
// (media.Blobs).
type MediaBlobs struct {
	obj jetstream.ObjectStore
}

var _ media.Blobs = (*MediaBlobs)(nil)

// NewMediaBlobs opens (creating it if needed) the Object Store bucket
// through js, with replicas copies on file or in memory.
func NewMediaBlobs(ctx context.Context, js jetstream.JetStream, bucket string, replicas int, memory bool) (*MediaBlobs, error) {
	storage := jetstream.FileStorage
	if memory {
		storage = jetstream.MemoryStorage
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: bucket, Description: "Phonebook media bodies (media/)", Storage: storage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: object store %s (is JetStream enabled on the NATS server?): %w", bucket, err)
	}
	return &MediaBlobs{obj: obj}, nil
}

// MediaBlobs opens the media bucket on the router's NATS connection, with
// the cluster's replicas and storage.
func (r *Router) MediaBlobs(ctx context.Context, bucket string) (*MediaBlobs, error) {
	return NewMediaBlobs(ctx, r.js, bucket, r.cfg.Replicas, r.cfg.MemoryStorage)
}

// Put implements media.Blobs.
func (b *MediaBlobs) Put(ctx context.Context, id string, r io.Reader) (int64, error) {
	info, err := b.obj.Put(ctx, jetstream.ObjectMeta{Name: id}, r)
	if err != nil {
		return 0, fmt.Errorf("cluster: storing media %s: %w", id, err)
	}
	return int64(info.Size), nil
}

// Open implements media.Blobs. The body is read whole (media are at most
// media.max_bytes) so that it can seek, for HTTP ranges.
func (b *MediaBlobs) Open(ctx context.Context, id string) (io.ReadSeekCloser, error) {
	res, err := b.obj.Get(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, media.ErrNoBlob
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: reading media %s: %w", id, err)
	}
	defer res.Close()
	body, err := io.ReadAll(res)
	if err != nil {
		return nil, fmt.Errorf("cluster: reading media %s: %w", id, err)
	}
	return nopCloser{bytes.NewReader(body)}, nil
}

// Delete implements media.Blobs.
func (b *MediaBlobs) Delete(ctx context.Context, id string) error {
	err := b.obj.Delete(ctx, id)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("cluster: deleting media %s: %w", id, err)
	}
	return nil
}

type nopCloser struct{ *bytes.Reader }

func (nopCloser) Close() error { return nil }
