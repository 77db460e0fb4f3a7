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
	m.API.EnableMedia(svc)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		svc.Run(ctx)
	}()
	return nil
}

func (m *Main) mediaBlobs(ctx context.Context, cfg media.Config) (media.Blobs, error) {
	if cr, ok := m.relayRouter.(*cluster.Router); ok {
		bucket := cfg.Bucket
		if ns := m.cfg.Cluster.Namespace; ns != "" {
			bucket += "_" + ns
		}
		return cr.MediaBlobs(ctx, bucket)
	}
	return media.NewDirBlobs(cfg.Dir)
}
