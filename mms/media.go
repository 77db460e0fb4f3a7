package mms

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/media"
)

// maxPartBytes bounds what the outbox reads of one medium: more than any
// upload limit, less than what could hurt.
const maxPartBytes = 64 << 20

// MediaStore adapts media.Service to what the outbox (Media) and inbound
// MMS (MOMedia) need.
type MediaStore struct{ S *media.Service }

var (
	_ Media   = MediaStore{}
	_ MOMedia = MediaStore{}
)

// Parts reads the media in order.
func (m MediaStore) Parts(ctx context.Context, ids []string) ([]Part, error) {
	out := make([]Part, 0, len(ids))
	for _, id := range ids {
		rc, info, err := m.S.Open(ctx, id)
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(rc, maxPartBytes+1))
		rc.Close()
		if err != nil {
			return nil, fmt.Errorf("media %s: %w", id, err)
		}
		if len(data) > maxPartBytes {
			return nil, phonebook.Errorf(phonebook.ETooLarge, "media %s is over %d bytes", id, maxPartBytes)
		}
		out = append(out, Part{ContentType: info.ContentType, Name: info.Name, Data: data})
	}
	return out, nil
}

// Link makes the download link of an SMS that replaces an MMS.
func (m MediaStore) Link(ctx context.Context, ref string, to phonebook.MSISDN, ids []string, ttl time.Duration) (string, error) {
	return m.S.Link(ctx, ref, to, ids, ttl)
}

// Upload stores a part of an inbound MMS as the phone's upload.
func (m MediaStore) Upload(ctx context.Context, owner phonebook.MSISDN, addrKey, name string, body io.Reader) (string, error) {
	info, err := m.S.Upload(ctx, owner, addrKey, name, body)
	return info.ID, err
}
