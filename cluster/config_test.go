package cluster_test

import (
	"strings"
	"testing"

	"github.com/phonebook/phonebook/cluster"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  cluster.Config
		want string // "" = valid
	}{
		{cluster.Config{Node: "a"}, ""},
		{cluster.Config{Node: "a", Namespace: "eu-1", Replicas: 3}, ""},
		{cluster.Config{Node: "a.b"}, "node id"},
		{cluster.Config{Node: "a", Namespace: "eu.1"}, "namespace"},
		{cluster.Config{Node: "a", Replicas: 7}, "replicas"},
		{cluster.Config{Node: "a", Replicas: -1}, "replicas"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}
