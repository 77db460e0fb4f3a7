package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/store"
)

// withStore loads the configuration, opens the store and runs fn on it.
// It does not migrate (only `migrate` and `serve` change the schema): a
// schema older than this binary is refused, saying to run `phonebook
// migrate`.
func withStore(cmd *cobra.Command, fn func(cfg config.Config, db *store.DB) error) error {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return err
	}
	db, err := openStore(cmd.Context(), cfg)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.CheckSchema(cmd.Context()); err != nil {
		return err
	}
	return fn(cfg, db)
}

// newOptOutCmd is `phonebook admin optout`: the numbers that take no
// fallback SMS (docs/sms-outbox.md, "Opt-out").
func newOptOutCmd() *cobra.Command {
	c := &cobra.Command{Use: "optout", Short: "List, add or remove numbers that take no fallback SMS"}
	var from string
	var all bool
	// numbers reads NUMBER and --from in the configured region.
	numbers := func(cfg config.Config, arg string) (n, sender phonebook.MSISDN, err error) {
		n, err = phonebook.NormalizeMSISDN(arg, cfg.Phone.DefaultRegion)
		if err != nil || from == "" {
			return n, "", err
		}
		sender, err = phonebook.NormalizeMSISDN(from, cfg.Phone.DefaultRegion)
		return n, sender, err
	}
	who := func(s phonebook.MSISDN) string {
		if s == "" {
			return "anyone"
		}
		return string(s)
	}
	list := &cobra.Command{
		Use:   "list [NUMBER]",
		Short: "List opt-outs (of one number)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(cfg config.Config, db *store.DB) error {
				var n phonebook.MSISDN
				if len(args) == 1 {
					var err error
					if n, _, err = numbers(cfg, args[0]); err != nil {
						return err
					}
				}
				const limit = 10000
				l, err := db.SMSOptOuts(cmd.Context(), n, limit)
				if err != nil {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NUMBER\tNO SMS FROM\tSINCE")
				for _, o := range l {
					fmt.Fprintf(w, "%s\t%s\t%s\n", o.Number, who(o.Sender), o.CreatedAt.Format(time.RFC3339))
				}
				if len(l) == limit {
					fmt.Fprintf(w, "(the first %d; name a number to see its own)\n", limit)
				}
				return w.Flush()
			})
		},
	}
	add := &cobra.Command{
		Use:   "add NUMBER",
		Short: "Stop fallback SMS to NUMBER, from anyone or (--from) from one IM user",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(cfg config.Config, db *store.DB) error {
				n, sender, err := numbers(cfg, args[0])
				if err != nil {
					return err
				}
				added, err := db.AddSMSOptOut(cmd.Context(), n, sender, time.Now())
				if err != nil {
					return err
				}
				if !added {
					fmt.Fprintf(cmd.OutOrStdout(), "%s already takes no SMS from %s\n", n, who(sender))
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s takes no SMS from %s\n", n, who(sender))
				return nil
			})
		},
	}
	add.Flags().StringVar(&from, "from", "", "only from this IM user's number")
	remove := &cobra.Command{
		Use:   "remove NUMBER",
		Short: "Lift NUMBER's opt-out from anyone, from one IM user (--from), or every one (--all)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withStore(cmd, func(cfg config.Config, db *store.DB) error {
				if all && from != "" {
					return phonebook.Errorf(phonebook.EInvalid, "--all and --from exclude each other")
				}
				n, sender, err := numbers(cfg, args[0])
				if err != nil {
					return err
				}
				gone, err := db.RemoveSMSOptOut(cmd.Context(), n, sender, all)
				if err != nil {
					return err
				}
				if gone == 0 {
					return phonebook.Errorf(phonebook.ENotFound, "%s has no such opt-out", n)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d opt-out(s) removed\n", n, gone)
				return nil
			})
		},
	}
	remove.Flags().StringVar(&from, "from", "", "the opt-out from this IM user's number")
	remove.Flags().BoolVar(&all, "all", false, "every opt-out of NUMBER")
	c.AddCommand(list, add, remove)
	return c
}
