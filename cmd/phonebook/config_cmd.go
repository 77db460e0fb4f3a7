package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/store"
)

func loadConfig(cmd *cobra.Command) (config.Config, error) {
	path, _ := cmd.Flags().GetString("config")
	return config.Load(path, cmd.Flags())
}

// addServerFlags adds the flags that override the most used keys.
func addServerFlags(fs *pflag.FlagSet) {
	fs.String("http-addr", "", "address the HTTP API listens on (http.addr)")
	addStoreFlags(fs)
	fs.String("node", "", "this node's name in a cluster (node)")
}

// addStoreFlags adds the flags of the commands that work on the store
// directly, without a running server (admin user).
func addStoreFlags(fs *pflag.FlagSet) {
	fs.String("database-driver", "", "sqlite or mysql (database.driver)")
	fs.String("database-dsn", "", "database file (sqlite) or DSN (mysql) (database.dsn)")
	fs.String("default-region", "", "region for national-format numbers, e.g. CN (phone.default_region)")
}

func newConfigCmd() *cobra.Command {
	c := &cobra.Command{Use: "config", Short: "Check or print the configuration"}
	check := &cobra.Command{
		Use:   "check FILE",
		Short: "Validate a configuration file as serve does; names each bad key with file and line",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Load(args[0], nil)
			if err != nil {
				return err
			}
			if err := checkConfig(cfg); err != nil {
				return fmt.Errorf("config %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration (defaults, file, environment, flags) with secrets redacted",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			b, err := cfg.Redacted().YAML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	addServerFlags(print.Flags())
	c.AddCommand(check, print)
	return c
}

func newMigrateCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the embedded schema migrations (serve also does this at start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			db, err := openStore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			defer db.Close()
			applied, err := db.Migrate(cmd.Context())
			if err != nil {
				return err
			}
			v, _ := db.Version(cmd.Context())
			if len(applied) == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "schema is up to date at version %d\n", v)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "applied %v; schema at version %d\n", applied, v)
			return nil
		},
	}
	addServerFlags(c.Flags())
	return c
}

func openStore(ctx context.Context, cfg config.Config) (*store.DB, error) {
	return store.Open(ctx, store.Options{Driver: cfg.Database.Driver, DSN: cfg.Database.DSN, MaxOpenConns: cfg.Database.MaxOpenConns})
}

// checkConfig makes the checks of the configuration that serve makes
// before it opens anything (config.Load made the rest): each component
// validates its own part. `config check` runs it too, so that a file it
// passes is one serve accepts.
func checkConfig(cfg config.Config) error {
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if len(cfg.SMSC.Links) == 0 && !cfg.SMSC.Simulator {
		add(errNoSMSC)
	}
	add(relayConfig(cfg).Validate())
	_, err := relay.LoadTLS(cfg.Relay.TLSCert, cfg.Relay.TLSKey)
	add(err)
	add(verifyConfig(cfg).Validate())
	add(smsc.ValidateLinks(linkConfigs(cfg.SMSC.Links)))
	add(contactsConfig(cfg).Validate())
	if cfg.Cluster.NATSURL != "" {
		add(clusterConfig(cfg).Validate())
	}
	return errors.Join(errs...)
}

func newLogger(cfg config.Config) *slog.Logger {
	lvl, _ := cfg.Log.SlogLevel() // config.Load refuses other levels
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
