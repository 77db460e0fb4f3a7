package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/bench"
)

func init() {
	extraCommands = append(extraCommands, newBenchCmd)
}

func newBenchCmd() *cobra.Command {
	c := &cobra.Command{Use: "bench", Short: "Load generators (see docs/benchmarks.md)"}
	r := &cobra.Command{
		Use:   "relay",
		Short: "N client pairs over TCP against an in-process relay: delivered msg/s and latency p50/p99/p999",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var o bench.Options
			o.Pairs, _ = cmd.Flags().GetInt("pairs")
			o.Messages, _ = cmd.Flags().GetInt("messages")
			o.TextSize, _ = cmd.Flags().GetInt("text-size")
			o.Window, _ = cmd.Flags().GetInt("window")
			o.Rate, _ = cmd.Flags().GetFloat64("rate")
			o.Addr, _ = cmd.Flags().GetString("connect")
			stopProfile, err := startCPUProfile(cmd)
			if err != nil {
				return err
			}
			res, err := bench.Run(cmd.Context(), o)
			stopProfile()
			if err == nil {
				err = writeHeapProfile(cmd)
			}
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), res)
			return nil
		},
	}
	r.Flags().Int("pairs", 1000, "sender/recipient pairs")
	r.Flags().Int("messages", 200000, "messages in total")
	r.Flags().Int("text-size", 100, "bytes per text")
	r.Flags().Int("window", 64, "messages in flight per sender")
	r.Flags().Float64("rate", 0, "offered messages per second in all (0 = as fast as the window allows)")
	r.Flags().String("connect", "", "generate load against a `phonebook bench relay-server` at this address instead of an in-process relay")
	srv := &cobra.Command{
		Use:   "relay-server",
		Short: "Run a relay with benchmark users (SQLite in a temporary directory) for `bench relay --connect`",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			addr, _ := cmd.Flags().GetString("addr")
			users, _ := cmd.Flags().GetInt("users")
			stopProfile, err := startCPUProfile(cmd)
			if err != nil {
				return err
			}
			defer stopProfile()
			_, bound, stop, err := bench.ServerAt(cmd.Context(), addr, users, relay.Config{}, nil)
			if err != nil {
				return err
			}
			defer stop()
			fmt.Fprintf(cmd.OutOrStdout(), "benchmark relay for %d users on %s; Ctrl-C to stop\n", users, bound)
			<-cmd.Context().Done()
			return writeHeapProfile(cmd)
		},
	}
	srv.Flags().String("addr", "127.0.0.1:7400", "listen address")
	srv.Flags().Int("users", 2000, "benchmark users (bench relay --pairs N needs 2N)")
	for _, x := range []*cobra.Command{r, srv} {
		x.Flags().String("cpuprofile", "", "write a CPU profile of this process to `file` (go tool pprof)")
		x.Flags().String("memprofile", "", "write a heap profile of this process to `file` when it stops (go tool pprof)")
	}
	c.AddCommand(r, srv)
	return c
}

// startCPUProfile starts the profile that --cpuprofile asks for; the
// returned function stops it and closes the file.
func startCPUProfile(cmd *cobra.Command) (stop func(), err error) {
	path, _ := cmd.Flags().GetString("cpuprofile")
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes the heap profile that --memprofile asks for.
func writeHeapProfile(cmd *cobra.Command) error {
	path, _ := cmd.Flags().GetString("memprofile")
	if path == "" {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--memprofile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		return fmt.Errorf("--memprofile: %w", err)
	}
	return nil
}
