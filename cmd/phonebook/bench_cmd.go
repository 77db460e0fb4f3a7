package main

import (
	"fmt"

	"github.com/spf13/cobra"

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
			res, err := bench.Run(cmd.Context(), o)
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
	c.AddCommand(r)
	return c
}
