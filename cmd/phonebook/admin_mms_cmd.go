package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/mms"
	"github.com/phonebook/phonebook/store"
)

// newMMSCapableCmd is `phonebook admin mms-capable`: the operator's word
// on who can receive MMS (docs/mms.md, "Who is MMS-capable").
func newMMSCapableCmd() *cobra.Command {
	c := &cobra.Command{Use: "mms-capable", Short: "Show or provision which numbers can receive MMS"}
	caps := func(cfg config.Config, db *store.DB) *mms.Capabilities {
		return mms.NewCapabilities(db, cfg.MMS.CapablePrefixes)
	}
	show := func(cmd *cobra.Command, cfg config.Config, db *store.DB, n phonebook.MSISDN) error {
		v, err := caps(cfg, db).Describe(cmd.Context(), n)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(cmd.OutOrStdout())
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	get := &cobra.Command{
		Use:   "show NUMBER",
		Short: "Whether NUMBER gets MMS, and what each source says",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(cfg config.Config, db *store.DB) error {
				n, err := phonebook.NormalizeMSISDN(args[0], cfg.Phone.DefaultRegion)
				if err != nil {
					return err
				}
				return show(cmd, cfg, db, n)
			})
		},
	}
	set := &cobra.Command{
		Use:   "set NUMBER yes|no",
		Short: "Provision NUMBER as MMS-capable or not (the operator's word wins over every other source)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(cfg config.Config, db *store.DB) error {
				list, err := mms.ParseCapabilityList(strings.NewReader(args[0]+","+args[1]), cfg.Phone.DefaultRegion)
				if err != nil {
					return err
				}
				if _, _, err := caps(cfg, db).Import(cmd.Context(), list); err != nil {
					return err
				}
				return show(cmd, cfg, db, list[0].Number)
			})
		},
	}
	var source string
	clear := &cobra.Command{
		Use:   "clear NUMBER",
		Short: "Forget the operator's word on NUMBER (--source client, mmsc or all for the others)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(cfg config.Config, db *store.DB) error {
				n, err := phonebook.NormalizeMSISDN(args[0], cfg.Phone.DefaultRegion)
				if err != nil {
					return err
				}
				src := source
				if src == "all" {
					src = ""
				}
				gone, err := caps(cfg, db).Forget(cmd.Context(), n, src)
				if err != nil {
					return err
				}
				if !gone {
					return phonebook.Errorf(phonebook.ENotFound, "%s has no %s record", n, source)
				}
				return show(cmd, cfg, db, n)
			})
		},
	}
	clear.Flags().StringVar(&source, "source", store.CapabilityOperator, "operator, client, mmsc or all")
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Provision the numbers in FILE (one per line, optionally \",yes\" or \",no\"; - = standard input)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(cfg config.Config, db *store.DB) error {
				in := cmd.InOrStdin()
				if args[0] != "-" {
					f, err := os.Open(args[0])
					if err != nil {
						return err
					}
					defer f.Close()
					in = f
				}
				list, err := mms.ParseCapabilityList(in, cfg.Phone.DefaultRegion)
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				yes, no, err := caps(cfg, db).Import(cmd.Context(), list)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d numbers provisioned: %d MMS-capable, %d not\n", yes+no, yes, no)
				return nil
			})
		},
	}
	c.AddCommand(get, set, clear, imp)
	return c
}
