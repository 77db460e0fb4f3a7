package smscsim

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Command is `phonebook smsc-sim`: the simulator for people. It prints every
// SMS it receives and reads "MO <from> <to> <text>" lines from stdin.
func Command() *cobra.Command {
	var (
		cfg      Config
		addr     string
		httpAddr string
		reject   []string
		delay    string
		quiet    bool
	)
	cmd := &cobra.Command{
		Use:   "smsc-sim",
		Short: "Run an SMSC simulator (SMPP 3.4 server) that prints every SMS it receives",
		Long: `smsc-sim is an SMSC for development and tests. Point a link at it
(addr, system_id, password) and every SMS the server sends is printed here,
verification codes included. Send an SMS from a "phone" by typing
  MO <from> <to> <text>
  REPLY <from> <text>     (to the source of the last SMS <from> received)
with POST /mo or /reply on the --http address, or with
"phonebook smsc-sim mo". See docs/smsc.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			cfg.Output = out
			if quiet {
				cfg.Output = io.Discard
			}
			cfg.RejectPrefixes = reject
			var err error
			if cfg.RespDelay, cfg.RespDelayMax, err = ParseDelayRange(delay); err != nil {
				return fmt.Errorf("--resp-delay: %w", err)
			}
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			sim := New(cfg)
			if err := sim.Start(addr); err != nil {
				return err
			}
			defer sim.Close()
			fmt.Fprintf(out, "smscsim: SMPP on %s\n", sim.Addr())
			if httpAddr != "" {
				a, err := sim.StartHTTP(httpAddr)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "smscsim: HTTP control on http://%s (POST /mo, POST /reply, POST /drop, POST /throttle, POST /resp-delay, POST /faults, GET /submits, GET /stats)\n", a)
			}
			go readMO(ctx, sim, cmd.InOrStdin(), out)
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:2775", "SMPP listen address")
	f.StringVar(&httpAddr, "http", "", "HTTP control listen address (empty = off), e.g. 127.0.0.1:2776")
	f.StringVar(&cfg.SystemID, "system-id", "", "accepted system_id (empty = any)")
	f.StringVar(&cfg.Password, "password", "", "accepted password (empty = any)")
	f.DurationVar(&cfg.ReceiptDelay, "receipt-delay", time.Second, "delay before each delivery receipt")
	f.StringVar(&cfg.ReceiptStat, "receipt-stat", "DELIVRD", "receipt outcome: DELIVRD, UNDELIV, EXPIRED, REJECTD, DELETED, ACCEPTD, UNKNOWN, or MIXED (DELIVRD, UNDELIV, EXPIRED in turn)")
	f.IntVar(&cfg.ReceiptErr, "receipt-err", 0, "receipt err: code")
	f.StringVar(&cfg.ReceiptFormat, "receipt-format", "text+tlv", "receipt format: text, tlv or text+tlv")
	f.StringVar(&cfg.MessageIDStyle, "message-id-style", "hex-upper", "message ids in submit_sm_resp: hex-upper, hex-lower or decimal")
	f.StringVar(&cfg.ReceiptIDStyle, "receipt-id-style", "", "message ids in receipts (default: --message-id-style)")
	f.BoolVar(&cfg.ShortIDs, "short-ids", false, "message ids count up from 1 without padding (1, 2, ... a, b, 10 in hex)")
	f.BoolVar(&cfg.ReceiptBeforeResp, "receipt-before-resp", false, "write each receipt before its submit_sm_resp, on the same session")
	f.IntVar(&cfg.ResetAfter, "reset-after", 0, "drop a session with a TCP reset after every N accepted submit_sm, the last one unanswered (0 = never)")
	f.IntVar(&cfg.ThrottleEvery, "throttle-every", 0, "answer every Nth submit_sm with ESME_RTHROTTLED (0 = never)")
	f.StringSliceVar(&reject, "reject-prefix", nil, "refuse destinations with this prefix (repeatable), e.g. +999")
	f.Uint32Var(&cfg.RejectStatus, "reject-status", 0x0B, "command_status for refused destinations")
	f.BoolVar(&quiet, "quiet", false, "do not print the SMS received (for load tests)")
	f.StringVar(&delay, "resp-delay", "0s", "delay every submit_sm_resp by this long (5ms), or by a random time in a range (1ms-20ms)")
	f.BoolVar(&cfg.CollideSeq, "collide-seq", false, "send deliver_sm with the sequence numbers of outstanding submits")
	f.BoolVar(&cfg.MOAsDataSM, "mo-data-sm", false, "send MO as data_sm instead of deliver_sm")
	f.DurationVar(&cfg.RedeliverAfter, "redeliver-after", time.Second, "wait before redelivering a refused deliver_sm")
	cmd.AddCommand(moCommand())
	return cmd
}

// readMO reads "MO <from> <to> <text>" and "REPLY <from> <text>" lines
// until EOF.
func readMO(ctx context.Context, sim *Sim, in io.Reader, out io.Writer) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.SplitN(line, " ", 4)
		var err error
		mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		switch {
		case len(fields) == 4 && strings.EqualFold(fields[0], "MO"):
			err = sim.InjectMO(mctx, fields[1], fields[2], fields[3])
		case len(fields) >= 3 && strings.EqualFold(fields[0], "REPLY"):
			_, text, _ := strings.Cut(line[len(fields[0])+1:], " ")
			_, err = sim.Reply(mctx, fields[1], text)
		default:
			fmt.Fprintln(out, "smscsim: want: MO <from> <to> <text>, or REPLY <from> <text>")
		}
		cancel()
		if err != nil {
			fmt.Fprintln(out, "smscsim:", err)
		}
	}
}
