package main

import (
	"runtime/debug"
	"testing"
)

func TestVersionLine(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.26.8", Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.time", Value: "2026-11-29T09:00:00Z"},
		{Key: "vcs.modified", Value: "false"},
	}}
	dirty := &debug.BuildInfo{GoVersion: "go1.26.8", Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
		{Key: "vcs.modified", Value: "true"},
	}}
	for _, tc := range []struct {
		name, version, commit string
		info                  *debug.BuildInfo
		want                  string
	}{
		{"vcs stamp", "dev", "", stamped, "phonebook dev commit 0123456789abcdef0123456789abcdef01234567 2026-11-29T09:00:00Z go1.26.8"},
		{"uncommitted changes", "dev", "", dirty, "phonebook dev commit 0123456789abcdef0123456789abcdef01234567-dirty go1.26.8"},
		{"ldflags win", "1.2.0", "fedcba", stamped, "phonebook 1.2.0 commit fedcba 2026-11-29T09:00:00Z go1.26.8"},
		{"no stamp", "dev", "", &debug.BuildInfo{GoVersion: "go1.26.8"}, "phonebook dev commit unknown go1.26.8"},
		{"no build info", "dev", "", nil, "phonebook dev commit unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := versionLine(tc.version, tc.commit, tc.info); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
