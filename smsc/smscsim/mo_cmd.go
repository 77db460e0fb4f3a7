package smscsim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// moCommand is `phonebook smsc-sim mo`: it makes a running simulator
// (`smsc-sim --http`, or serve's built-in one with smsc.simulator_http)
// send an MO, to an address or as a reply.
func moCommand() *cobra.Command {
	var httpAddr, from, to string
	var reply bool
	cmd := &cobra.Command{
		Use:   "mo --from NUMBER (--to ADDRESS | --reply) TEXT...",
		Short: "Send an SMS from a phone through a running simulator's HTTP control",
		Long: `mo sends an inbound SMS (MO) through a running simulator: to an address
(--to 10690, or a short number with an extension such as 106900042), or with
--reply to the source of the last SMS the phone received, as a handset's
"reply" does.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if from == "" || (to == "") == !reply {
				return fmt.Errorf("want --from and exactly one of --to and --reply")
			}
			body := map[string]string{"from": from, "text": strings.Join(args, " ")}
			path := "/reply"
			if !reply {
				body["to"], path = to, "/mo"
			}
			b, _ := json.Marshal(body)
			c := &http.Client{Timeout: 15 * time.Second}
			res, err := c.Post("http://"+httpAddr+path, "application/json", bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("is a simulator's HTTP control on %s? %w", httpAddr, err)
			}
			defer res.Body.Close()
			var ans struct {
				Status, To string
				Error      struct{ Code, Message string }
			}
			if err := json.NewDecoder(res.Body).Decode(&ans); err != nil {
				return fmt.Errorf("simulator answered %s: %w", res.Status, err)
			}
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", ans.Error.Code, ans.Error.Message)
			}
			if ans.To == "" {
				ans.To = to
			}
			fmt.Fprintf(cmd.OutOrStdout(), "MO %s -> %s: %s\n", from, ans.To, ans.Status)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http", "127.0.0.1:2776", "the simulator's HTTP control address")
	f.StringVar(&from, "from", "", "the phone sending (E.164, e.g. +8613700137000)")
	f.StringVar(&to, "to", "", "the address it is sent to (short number, with an extension)")
	f.BoolVar(&reply, "reply", false, "send it to the source of the last SMS the phone received")
	return cmd
}
