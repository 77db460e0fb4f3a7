package config

import (
	"strings"
	"testing"
)

func TestClusterKeysAreChecked(t *testing.T) {
	for _, tc := range []struct {
		yaml, want string
	}{
		{"cluster: {storage: disk}", "cluster.storage"},
		{"cluster: {tls_cert: c.pem}", "cluster.tls_cert and cluster.tls_key"},
		{"cluster: {creds_file: a.creds, nkey_file: a.nk}", "cluster.creds_file and cluster.nkey_file"},
		{"cluster: {ready_grace: -1s}", "cluster.ready_grace"},
		{"cluster: {connect_timeout: 100ms}", "cluster.connect_timeout"},
	} {
		t.Run(tc.yaml, func(t *testing.T) {
			_, err := Load(write(t, tc.yaml+"\n"), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
	c, err := Load(write(t, "cluster: {namespace: eu-1, replicas: 3, storage: memory, ready_grace: 0s}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.Namespace != "eu-1" || c.Cluster.Replicas != 3 || c.Cluster.Storage != "memory" || c.Cluster.ReadyGrace != 0 {
		t.Fatalf("cluster keys: %+v", c.Cluster)
	}
}
