package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook/mm7/mmscsim"
)

func init() {
	extraCommands = append(extraCommands, mmscSimCommand)
}

// mmscSimCommand is `phonebook mmsc-sim`: the MMSC simulator for people. It
// prints every MMS it receives and reads "MO <from> <to> <text>" lines.
func mmscSimCommand() *cobra.Command {
	var (
		cfg      mmscsim.Config
		addr     string
		httpAddr string
		delay    string
		quiet    bool
	)
	cmd := &cobra.Command{
		Use:   "mmsc-sim",
		Short: "Run an MMSC simulator (MM7 over HTTP) that prints every MMS it receives",
		Long: `mmsc-sim is an MMSC for development and tests. Point an MMS link at its
MM7 URL and every MMS the server sends is printed here with its parts; with
--vasp-url it sends delivery reports back and can send MMS from a "phone":
type
  MO <from> <to> <text>
or use POST /mo on the --http address, or "phonebook mmsc-sim mo".
See docs/mms.md ("Simulator").`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			cfg.Output = out
			if quiet {
				cfg.Output = io.Discard
			}
			var err error
			if cfg.RespDelay, cfg.RespDelayMax, err = mmscsim.ParseDelayRange(delay); err != nil {
				return fmt.Errorf("--resp-delay: %w", err)
			}
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
			if err := cfg.Validate(); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			sim := mmscsim.New(cfg)
			if err := sim.Start(addr); err != nil {
				return err
			}
			defer sim.Close()
			fmt.Fprintf(out, "mmscsim: MM7 on %s\n", sim.URL())
			if httpAddr != "" {
				a, err := sim.StartHTTP(httpAddr)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "mmscsim: HTTP control on http://%s (%s)\n", a, "POST /mo, POST /report, POST /down, POST /faults, POST /resp-delay, POST /not-capable, GET /submissions, GET /reports, GET /stats")
			}
			go readMMSMO(ctx, sim, cmd.InOrStdin(), out)
			<-ctx.Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "addr", "127.0.0.1:2780", "MM7 listen address (the URL is http://ADDR/mm7; any path is taken)")
	f.StringVar(&httpAddr, "http", "", "HTTP control listen address (empty = off), e.g. 127.0.0.1:2781")
	f.StringVar(&cfg.Username, "username", "", "HTTP basic auth user the VASP must present (empty = any)")
	f.StringVar(&cfg.Password, "password", "", "HTTP basic auth password the VASP must present")
	f.StringVar(&cfg.VASPURL, "vasp-url", "", "the VASP's MM7 endpoint for delivery reports and MO (empty = none sent)")
	f.StringVar(&cfg.VASPUsername, "vasp-username", "", "basic auth user toward the VASP")
	f.StringVar(&cfg.VASPPassword, "vasp-password", "", "basic auth password toward the VASP")
	f.StringVar(&cfg.Version, "version", "REL-5-MM7-1-2", "schema of the requests sent to the VASP: REL-5-MM7-1-2 or REL-6-MM7-1-4")
	f.DurationVar(&cfg.ReportDelay, "report-delay", time.Second, "delay before each delivery report")
	f.StringVar(&cfg.ReportStatus, "report-status", "Retrieved", "delivery reports' MMStatus: Retrieved, Rejected, Expired, Indeterminate, Forwarded, Deferred, Unrecognised, or MIXED (Retrieved, Rejected, Expired in turn)")
	f.BoolVar(&cfg.ReportBeforeResp, "report-before-resp", false, "send each message's delivery report before its SubmitRsp")
	f.StringVar(&delay, "resp-delay", "0s", "delay every SubmitRsp by this long (50ms), or by a random time in a range (10ms-200ms)")
	f.IntVar(&cfg.DropEvery, "drop-every", 0, "close every Nth request's connection without an answer (0 = never)")
	f.IntVar(&cfg.HTTPErrorEvery, "http-error-every", 0, "answer every Nth request with an HTTP error without SOAP (0 = never)")
	f.IntVar(&cfg.HTTPErrorStatus, "http-error-status", 503, "the HTTP status for --http-error-every")
	f.IntVar(&cfg.FaultEvery, "fault-every", 0, "answer every Nth request with a SOAP fault (0 = never)")
	f.IntVar(&cfg.FaultCode, "fault-code", 3000, "the MM7 status code of --fault-every's faults")
	f.IntVar(&cfg.ResetEvery, "reset-every", 0, "reset the connection after accepting every Nth message: its SubmitRsp is lost (0 = never)")
	f.IntVar(&cfg.RepeatMOEvery, "repeat-mo-every", 0, "send every Nth MO twice under one TransactionID, as an MMSC that lost the answer does (0 = never)")
	f.StringSliceVar(&cfg.NotCapablePrefixes, "not-capable", nil, "recipients with this prefix are not MMS capable (repeatable), e.g. +86137")
	f.IntVar(&cfg.NotCapableCode, "not-capable-code", 2002, "the status code answered for them")
	f.StringVar(&cfg.NotCapableText, "not-capable-text", "", "the details of that answer ({to} is the recipient); default \"recipient {to} is not MMS capable\"")
	f.StringVar(&cfg.MessageIDStyle, "message-id-style", "hex", "message ids: hex, short (1, 2, 3...) or odd (spaces, XML specials, non-ASCII)")
	f.Int64Var(&cfg.MaxBytes, "max-bytes", 8<<20, "largest SubmitReq body taken")
	f.BoolVar(&quiet, "quiet", false, "do not print the MMS received (for load tests)")
	cmd.AddCommand(mmscMOCommand())
	return cmd
}

// readMMSMO reads "MO <from> <to> <text>" lines until EOF.
func readMMSMO(ctx context.Context, sim *mmscsim.Sim, in io.Reader, out io.Writer) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		fields := strings.SplitN(line, " ", 4)
		if len(fields) != 4 || !strings.EqualFold(fields[0], "MO") {
			fmt.Fprintln(out, "mmscsim: want: MO <from> <to> <text>")
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err := sim.InjectMO(mctx, mmscsim.MO{From: fields[1], To: fields[2], Text: fields[3]})
		cancel()
		if err != nil {
			fmt.Fprintln(out, "mmscsim:", err)
			continue
		}
		fmt.Fprintf(out, "mmscsim: MMS from %s to %s delivered\n", fields[1], fields[2])
	}
}

// mmscMOCommand is `phonebook mmsc-sim mo`: a running simulator sends an MMS
// from a phone to the VASP.
func mmscMOCommand() *cobra.Command {
	var httpAddr, from, to, subject string
	var files []string
	cmd := &cobra.Command{
		Use:   "mo --from NUMBER --to SHORTNUMBER [--file PHOTO]... [TEXT...]",
		Short: "Send an MMS from a phone through a running MMSC simulator's HTTP control",
		RunE: func(cmd *cobra.Command, args []string) error {
			text := strings.Join(args, " ")
			if from == "" || to == "" || text == "" && len(files) == 0 {
				return fmt.Errorf("want --from, --to and a text or --file")
			}
			type media struct {
				ContentType string `json:"content_type"`
				Name        string `json:"name"`
				Data        []byte `json:"data"`
			}
			body := struct {
				From    string  `json:"from"`
				To      string  `json:"to"`
				Subject string  `json:"subject,omitempty"`
				Text    string  `json:"text,omitempty"`
				Media   []media `json:"media,omitempty"`
			}{From: from, To: to, Subject: subject, Text: text}
			for _, name := range files {
				data, err := os.ReadFile(name)
				if err != nil {
					return err
				}
				ct := mime.TypeByExtension(filepath.Ext(name))
				if ct == "" {
					ct = http.DetectContentType(data)
				}
				body.Media = append(body.Media, media{ContentType: ct, Name: filepath.Base(name), Data: data})
			}
			b, _ := json.Marshal(body)
			c := &http.Client{Timeout: 20 * time.Second}
			res, err := c.Post("http://"+httpAddr+"/mo", "application/json", bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("is an MMSC simulator's HTTP control on %s? %w", httpAddr, err)
			}
			defer res.Body.Close()
			var ans struct {
				Status string
				Error  struct{ Code, Message string }
			}
			if err := json.NewDecoder(res.Body).Decode(&ans); err != nil {
				return fmt.Errorf("simulator answered %s: %w", res.Status, err)
			}
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("%s: %s", ans.Error.Code, ans.Error.Message)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "MMS %s -> %s: %s\n", from, to, ans.Status)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http", "127.0.0.1:2781", "the simulator's HTTP control address")
	f.StringVar(&from, "from", "", "the phone sending (E.164, e.g. +8613900001111)")
	f.StringVar(&to, "to", "", "the short number it is sent to")
	f.StringVar(&subject, "subject", "", "the MMS subject")
	f.StringSliceVar(&files, "file", nil, "a media file to attach (repeatable)")
	return cmd
}
