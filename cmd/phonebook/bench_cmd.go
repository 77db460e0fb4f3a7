package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/relay/bench"
	"github.com/phonebook/phonebook/smsc/outboxbench"
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
	ob := &cobra.Command{
		Use:   "outbox",
		Short: "SMS/s from the outbox to an SMSC over SMPP, with CPU µs/SMS of this process and the database",
		Long: `outbox fills a fresh outbox (a new MariaDB database, or SQLite in a
temporary directory), drains it to an SMSC and reports SMS/s and the CPU
time per SMS of this process and of mariadbd (read from /proc). Without
--smsc it starts an in-process simulator (then its CPU counts as ours);
scripts/bench-outbox runs the simulator in its own process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var o outboxbench.Options
			f := cmd.Flags()
			o.Driver, _ = f.GetString("store")
			o.DSN, _ = f.GetString("dsn")
			o.SMSC, _ = f.GetString("smsc")
			o.RespDelay, _ = f.GetDuration("resp-delay")
			o.Window, _ = f.GetInt("window")
			o.Binds, _ = f.GetInt("binds")
			o.Messages, _ = f.GetInt("messages")
			o.Producers, _ = f.GetInt("producers")
			o.Receipts, _ = f.GetBool("receipts")
			o.Warmup, _ = f.GetInt("warmup")
			runs, _ := f.GetInt("runs")
			o.Outbox.Batch, _ = f.GetInt("batch")
			o.Outbox.Claimers, _ = f.GetInt("claimers")
			o.Outbox.Recorders, _ = f.GetInt("recorders")
			o.Outbox.FlushSize, _ = f.GetInt("flush-size")
			stopProfile, err := startCPUProfile(cmd)
			if err != nil {
				return err
			}
			defer stopProfile()
			for range max(runs, 1) {
				res, err := outboxbench.Run(cmd.Context(), o)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), res)
			}
			return nil
		},
	}
	of := ob.Flags()
	of.String("store", "mysql", "sqlite or mysql")
	of.String("dsn", "root@tcp(127.0.0.1:3306)/", "MariaDB/MySQL server (a database is created in it and dropped afterwards)")
	of.String("smsc", "", "SMSC `host:port` (e.g. `phonebook smsc-sim --resp-delay 5ms`); empty = an in-process simulator")
	of.Duration("resp-delay", 5*time.Millisecond, "the in-process simulator's submit_sm_resp delay")
	of.Int("window", 100, "outstanding submits per bind")
	of.Int("binds", 1, "sessions to the SMSC")
	of.Int("messages", 20000, "SMS measured per run")
	of.Int("producers", 0, "enqueue the SMS one per transaction from this many producers while draining (0 = fill the outbox first)")
	of.Bool("receipts", false, "ask for a delivery receipt per SMS and count an SMS once its receipt is applied")
	of.Int("warmup", 2000, "SMS sent before each measured run")
	of.Int("runs", 1, "runs, each on a fresh database")
	of.Int("batch", 0, "outbox tuning: messages per claim (0 = the outbox's default)")
	of.Int("claimers", 0, "outbox tuning: concurrent claims (0 = default)")
	of.Int("recorders", 0, "outbox tuning: concurrent result writers (0 = default)")
	of.Int("flush-size", 0, "outbox tuning: most results per write (0 = default)")
	for _, x := range []*cobra.Command{r, srv} {
		x.Flags().String("cpuprofile", "", "write a CPU profile of this process to `file` (go tool pprof)")
		x.Flags().String("memprofile", "", "write a heap profile of this process to `file` when it stops (go tool pprof)")
	}
	ob.Flags().String("cpuprofile", "", "write a CPU profile of this process to `file` (go tool pprof)")
	c.AddCommand(r, srv, ob)
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
