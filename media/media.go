// Package media keeps what handsets send besides text: photos, voice
// notes, videos, contact cards. A client uploads a body over HTTP
// (authenticated, size-limited, its type sniffed from the bytes, never
// taken from the client) and gets a media id; a relay Send names ids, and
// the relay attaches them to the message (Service.Attach), which is what
// lets the recipient download them. A medium lives while a message
// references it, then the janitor deletes it. Bodies live behind Blobs: a
// local directory on one node (DirBlobs), the NATS JetStream Object Store
// on a cluster (cluster.NewMediaBlobs). Metadata lives in the store.
package media

import (
	"context"
	"io"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
)

// Info describes one stored medium.
type Info struct {
	ID          string
	Owner       phonebook.MSISDN // who uploaded it
	ContentType string           // sniffed: one of AllowedTypes
	Size        int64
	SHA256      string // hex
	Name        string // the file name given at upload, cleaned; may be empty
	Width       int    // pixels, images only
	Height      int
	Thumbnail   bool // a thumbnail exists (GET /v1/media/{id}/thumbnail)
	Created     time.Time
	// Expires is when the janitor deletes it unless a message references
	// it for longer (Service.Attach moves it later).
	Expires time.Time
}

// Ref is the relay protocol's description of the medium (Deliver.media).
func (i Info) Ref() *relaypb.MediaRef {
	return &relaypb.MediaRef{
		Id: i.ID, ContentType: i.ContentType, Size: uint64(i.Size), Name: i.Name,
		Width: uint32(i.Width), Height: uint32(i.Height), Thumbnail: i.Thumbnail,
	}
}

// Blobs stores media bodies by id. Put stores all of r under id and
// returns its length; Open returns the body (ErrNoBlob when there is
// none); Delete removes it (no error when it is already gone).
// Implementations: DirBlobs (one node), cluster.NewMediaBlobs (JetStream
// Object Store, every node).
type Blobs interface {
	Put(ctx context.Context, id string, r io.Reader) (int64, error)
	Open(ctx context.Context, id string) (io.ReadSeekCloser, error)
	Delete(ctx context.Context, id string) error
}

// ErrNoBlob is what Blobs.Open returns for an id it does not hold.
var ErrNoBlob = phonebook.Errorf(phonebook.ENotFound, "no such media")
