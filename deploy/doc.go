// Package deploy holds what installs and watches Phonebook, not Go code:
// Prometheus alert rules (prometheus/), a Grafana dashboard (grafana/), a
// hardened systemd unit and its configuration (systemd/, phonebook.yaml),
// and a Dockerfile with a compose file for a three-node cluster (docker/).
// Its tests check those files with the tools that consume them (promtool,
// systemd-analyze) and build the binary they install.
package deploy
