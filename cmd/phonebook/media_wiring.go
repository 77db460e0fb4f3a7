package main

import (
	"context"

	"github.com/phonebook/phonebook/cluster"
	"github.com/phonebook/phonebook/media"
)

// startMedia builds the media service: bodies in media.dir on one node, in
// the JetStream Object Store on a cluster (any node serves any medium).
// It must run after startCluster and before startRelay (the relay checks
// and attaches the media a Send names) and serves the media endpoints on
// the public listener.
func (m *Main) startMedia(ctx context.Context) error {
	cfg := m.cfg.MediaConfig()
	blobs, err := m.mediaBlobs(ctx, cfg)
	if err != nil {
		return err
	}
	svc, err := media.New(cfg, m.DB, blobs, m.log)
	if err != nil {
		return err
	}
	m.Media = svc
	// (the HTTP endpoints: api.EnableMedia, next)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		svc.Run(ctx)
	}()
	return nil
}

func (m *Main) mediaBlobs(ctx context.Context, cfg media.Config) (media.Blobs, error) {
	if cr, ok := m.relayRouter.(*cluster.Router); ok {
		return cr.MediaBlobs(ctx, cfg.Bucket)
	}
	return media.NewDirBlobs(cfg.Dir)
}
