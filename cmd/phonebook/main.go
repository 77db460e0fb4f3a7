// Command phonebook is the Phonebook server and its tools: serve, migrate,
// config, admin, the SMSC simulator and the handset emulator.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/spf13/cobra"
)

// version and commit are set at build time with
// -ldflags "-X main.version=1.0.0 -X main.commit=$(git rev-parse HEAD)"
// (the Dockerfile does). Without commit, the VCS stamp that go build writes
// into binaries built from a git checkout names it.
var (
	version = "dev"
	commit  = ""
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "phonebook:", err)
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		os.Exit(code)
	}
}

// exitError ends the process with a documented exit status other than 1
// (the phone commands': see phoneExitCodes).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "phonebook",
		Short:         "Phonebook: the phone's address book as an instant-messaging contact list",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("config", "", "YAML configuration file (default: none, the embedded default)")
	root.AddCommand(newServeCmd(), newMigrateCmd(), newConfigCmd(), newAdminCmd(), newVersionCmd())
	for _, c := range extraCommands {
		root.AddCommand(c())
	}
	return root
}

// extraCommands are added by other files of this package (simulator,
// handset emulator, benchmarks) so that each wiring stays in its own file.
var extraCommands []func() *cobra.Command

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			info, _ := debug.ReadBuildInfo()
			fmt.Fprintln(cmd.OutOrStdout(), versionLine(version, commit, info))
		},
	}
}

// versionLine is what `phonebook version` prints: the version, the commit
// (from -ldflags, else the build's vcs.revision, "-dirty" when the checkout
// had uncommitted changes), the commit time and the Go version.
func versionLine(version, commit string, info *debug.BuildInfo) string {
	var when, dirty, goVersion string
	if info != nil {
		goVersion = info.GoVersion
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				if commit == "" {
					commit = s.Value
				}
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
	}
	if commit == "" {
		commit, dirty = "unknown", ""
	}
	line := fmt.Sprintf("phonebook %s commit %s%s", version, commit, dirty)
	if when != "" {
		line += " " + when
	}
	if goVersion != "" {
		line += " " + goVersion
	}
	return line
}
