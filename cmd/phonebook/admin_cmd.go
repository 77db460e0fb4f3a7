package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/user"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/accounts"
	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/relay"
	"github.com/phonebook/phonebook/store"
)

func newAdminCmd() *cobra.Command {
	c := &cobra.Command{Use: "admin", Short: "Operator tools: accounts in the store, the running server's connection table"}
	user := &cobra.Command{Use: "user", Short: "Show, block, unblock or delete a user (works on the store: --database-driver, --database-dsn)"}
	addStoreFlags(c.PersistentFlags())

	withUser := func(use, short string, fn func(cmd *cobra.Command, acc *accounts.Service, db *store.DB, n phonebook.MSISDN) error) *cobra.Command {
		return &cobra.Command{
			Use:   use + " NUMBER",
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return withStore(cmd, func(cfg config.Config, db *store.DB) error {
					n, err := phonebook.NormalizeMSISDN(args[0], cfg.Phone.DefaultRegion)
					if err != nil {
						return err
					}
					acfg, err := accountsConfig(cfg)
					if err != nil {
						return err
					}
					return fn(cmd, accounts.New(db, acfg, nil, nil), db, n)
				})
			},
		}
	}
	user.AddCommand(
		withUser("show", "Show the user record", func(cmd *cobra.Command, acc *accounts.Service, _ *store.DB, n phonebook.MSISDN) error {
			u, err := acc.User(cmd.Context(), n)
			if err != nil {
				return err
			}
			out := map[string]any{
				"number": u.Number, "device_id": u.DeviceID, "sim_id": u.SIMID, "created_at": u.CreatedAt,
				"valid": u.Valid, "last_login": u.LastLogin, "login_count": u.LoginCount,
				"rescue_password_set": u.RescueHash != "", "secure_mode": u.SecureMode, "proven_by": u.ProvenBy,
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		}),
		withUser("block", "Block the account: logins and sessions are refused", func(cmd *cobra.Command, acc *accounts.Service, db *store.DB, n phonebook.MSISDN) error {
			revoked, err := acc.Block(cmd.Context(), n)
			detail := fmt.Sprintf("%d sessions revoked", revoked)
			if err := audited(cmd, db, "block", n, detail, err); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s blocked; %s\n", n, detail)
			return nil
		}),
		withUser("unblock", "Unblock the account", func(cmd *cobra.Command, acc *accounts.Service, db *store.DB, n phonebook.MSISDN) error {
			if err := audited(cmd, db, "unblock", n, "", acc.Unblock(cmd.Context(), n)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s unblocked\n", n)
			return nil
		}),
		withUser("delete", "Delete the user, their sessions, address book, contact list and status", func(cmd *cobra.Command, acc *accounts.Service, db *store.DB, n phonebook.MSISDN) error {
			// The book goes too: whoever gets the number next must not
			// restore it.
			if err := audited(cmd, db, "delete_user", n, "", acc.Delete(cmd.Context(), n)); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s deleted\n", n)
			return nil
		}),
	)
	conns := &cobra.Command{
		Use:   "connections",
		Short: "List the relay's connection table (number, device, node, transport, address, since)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if cfg.Admin.Addr == "" {
				return fmt.Errorf("admin.addr is empty: the server has no admin listener")
			}
			addr := cfg.Admin.Addr
			if host, port, err := net.SplitHostPort(addr); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			req, err := http.NewRequestWithContext(cmd.Context(), "GET", "http://"+addr+"/admin/connections", nil)
			if err != nil {
				return err
			}
			if cfg.Admin.Token != "" {
				req.Header.Set("Authorization", "Bearer "+cfg.Admin.Token)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("is the server's admin listener (admin.addr) on %s? %w", addr, err)
			}
			defer res.Body.Close()
			var body struct {
				Connections []relay.ConnInfo `json:"connections"`
				Error       map[string]string
			}
			if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
				return err
			}
			if res.StatusCode != 200 {
				return fmt.Errorf("%s: %s", body.Error["code"], body.Error["message"])
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NUMBER\tDEVICE\tNODE\tTRANSPORT\tADDRESS\tCONNECTED")
			for _, c := range body.Connections {
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Number, c.DeviceID, c.Node, c.Transport, c.RemoteAddr, c.ConnectedAt.Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	conns.Flags().String("admin-addr", "", "address of the running server's admin listener to ask (admin.addr; default 127.0.0.1:8090)")
	c.AddCommand(user, conns, newOptOutCmd(), newMMSCapableCmd())
	return c
}

// audited records an operator action of `phonebook admin user` in the
// audit log, as the console records its own (action, or action_failed with
// the error), by "cli:" and the operating-system user, from this host. It
// returns the action's error; an action done but not recorded is reported.
func audited(cmd *cobra.Command, db *store.DB, action string, n phonebook.MSISDN, detail string, err error) error {
	e := store.AuditEntry{Actor: "cli:" + osUser(), Action: action, Target: string(n), Detail: detail}
	e.Remote, _ = os.Hostname()
	if err != nil {
		e.Action, e.Detail = action+"_failed", err.Error()
	}
	if aerr := db.AddAudit(cmd.Context(), e); aerr != nil && err == nil {
		return fmt.Errorf("%s %s was done, but not recorded in the audit log: %w", action, n, aerr)
	}
	return err
}

// osUser names who runs the command, for the audit log.
func osUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return os.Getenv("USER")
}
