package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/proto/relaypb"
)

func init() {
	extraCommands = append(extraCommands, newPhoneCmd)
}

// phoneState is what the emulated handset keeps between runs: its identity
// and the device key it was given when its number was proven.
type phoneState struct {
	Server    string `json:"server"`
	Relay     string `json:"relay"`
	Number    string `json:"number"`
	DeviceID  string `json:"device_id"`
	SIMID     string `json:"sim_id"`
	DeviceKey string `json:"device_key"`

	token string // this run's session token (not kept)
}

func loadPhone(path string) (phoneState, error) {
	var s phoneState
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("phone state %s: %w (run `phonebook phone register` first)", path, err)
	}
	return s, json.Unmarshal(b, &s)
}

func savePhone(path string, s phoneState) error {
	b, _ := json.MarshalIndent(s, "", "  ")
	return os.WriteFile(path, b, 0o600)
}

func newPhoneCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "phone",
		Short: "A handset emulator: register, log in, chat, for people and scripts",
		Long: `phone emulates a handset running a Phonebook client. Its identity and device key
are kept in a state file (--state, default phone.json), so that several phones can
run side by side from different files.

` + phoneExitCodes,
	}
	c.PersistentFlags().String("state", "phone.json", "file holding this phone's identity and device key")
	c.PersistentFlags().String("server", "http://127.0.0.1:8080", "HTTP API base URL")
	c.PersistentFlags().String("relay", "127.0.0.1:5222", "relay TCP address")

	reg := &cobra.Command{
		Use:   "register NUMBER",
		Short: "Prove the phone's number (--method sms, mo, header or client) and keep the device key",
		Args:  cobra.ExactArgs(1),
		RunE:  phoneRegister,
	}
	reg.Flags().String("method", "sms", "sms (code by SMS), mo (text a token to the short number), header (operator gateway), client (asserted)")
	reg.Flags().String("device", "", "device id (IMEI); default derived from the number")
	reg.Flags().String("sim", "", "SIM id (ICCID/IMSI); default derived from the number")
	reg.Flags().String("code", "", "the SMS code, when known; otherwise it is read from standard input")
	reg.Flags().String("header", "X-Up-Calling-Line-Id", "number header name for --method header")

	chat := &cobra.Command{
		Use:   "chat",
		Short: "Log in and chat: type `NUMBER text` to send, `/status TEXT`, `/im busy`, `/activity in_call` or `/who`; incoming messages, receipts and presence are printed",
		Long: `chat logs in and reads lines from standard input, one at a time and in order:
` + "`NUMBER text`" + ` sends a message; /status TEXT, /im online|busy|away, /activity WORD
and /who act on the phone's presence, each applied before the next line is read.
Incoming messages, send results, receipts and presence changes are printed as they
arrive. At the end of the input (Ctrl-D, or the end of a pipe) chat waits for the
answers still due (at most --timeout each), keeps printing for --wait, and ends.

` + phoneExitCodes,
		Args: cobra.NoArgs,
		RunE: phoneChat,
	}
	chat.Flags().Duration("wait", 0, "how long to keep printing after the input ended and every answer came")
	chat.Flags().Duration("timeout", 30*time.Second, "how long to wait for the server's answer to each message")
	send := &cobra.Command{
		Use:   "send NUMBER TEXT...",
		Short: "Log in, send one message, print its result (with the reason when it failed) and receipts until --wait ends",
		Long: `send logs in, sends one message and prints the server's answer: delivered, stored
(the recipient is offline: delivered when they log in), or the reason it was refused.
It then prints receipts for --wait.

` + phoneExitCodes,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			files, _ := cmd.Flags().GetStringArray("media")
			if len(args) < 2 && len(files) == 0 {
				return fmt.Errorf("send needs a number and a text, or --media FILE")
			}
			return phoneSession(cmd, strings.NewReader(args[0]+" "+strings.Join(args[1:], " ")+"\n"))
		},
	}
	send.Flags().StringArray("media", nil, "a photo, voice note, video or vCard to send (repeatable); the text is its caption")
	send.Flags().Duration("wait", 2*time.Second, "how long to keep printing receipts after the result")
	send.Flags().Duration("timeout", 30*time.Second, "how long to wait for the server's answer")
	listen := &cobra.Command{
		Use:   "listen",
		Short: "Log in and print incoming messages (stored ones first) until --wait ends",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return phoneSession(cmd, strings.NewReader(""))
		},
	}
	listen.Flags().Duration("wait", 5*time.Second, "how long to listen")
	for _, cmd := range []*cobra.Command{chat, send, listen} {
		cmd.Flags().String("media-dir", "phone-media", "where media that arrive with messages are saved (\"\" = not downloaded)")
	}
	c.AddCommand(reg, chat, send, listen)
	for _, f := range phoneExtras {
		c.AddCommand(f())
	}
	return c
}

// phoneExitCodes documents the phone commands' exit status.
const phoneExitCodes = `Exit status:
  0  done: every message delivered or accepted (stored, or queued as SMS), every command applied
  1  could not run: bad arguments, no state file, server or relay unreachable
  2  the server refused to prove the number or to log the phone in (the reason is printed)
  3  the server refused a message or a command (the reason is printed)
  4  no answer: a message's result did not come within --timeout, or the connection
     ended first; the message may or may not have been accepted`

// Exit statuses of the phone commands (phoneExitCodes).
const (
	exitRefusedLogin = 2
	exitRefused      = 3
	exitNoAnswer     = 4
)

// refusedLogin marks the server's refusal (an API or relay error) to prove
// or log in, for exit status 2; other errors keep status 1.
func refusedLogin(err error) error {
	var ae *client.APIError
	var se *client.ServerError
	if errors.As(err, &ae) || errors.As(err, &se) {
		return &exitError{code: exitRefusedLogin, err: err}
	}
	return err
}

// phoneExtras are phone subcommands added by other files (contacts, status).
var phoneExtras []func() *cobra.Command

func phoneAPI(cmd *cobra.Command) *client.API {
	server, _ := cmd.Flags().GetString("server")
	return &client.API{BaseURL: server}
}

func phoneRegister(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	method, _ := cmd.Flags().GetString("method")
	number := args[0]
	digits := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, number)
	dev, _ := cmd.Flags().GetString("device")
	sim, _ := cmd.Flags().GetString("sim")
	if dev == "" {
		dev = "imei-" + digits
	}
	if sim == "" {
		sim = "iccid-" + digits
	}
	id := client.Identity{DeviceID: dev, SIMID: sim}
	api := phoneAPI(cmd)
	var creds client.Credentials
	var err error
	switch method {
	case "sms":
		st, err := api.StartSMS(ctx, number, id)
		if err != nil {
			return refusedLogin(err)
		}
		fmt.Fprintf(out, "code sent to %s by SMS; valid until %s\n", st.Number, st.ExpiresAt.Local().Format(time.Kitchen))
		code, _ := cmd.Flags().GetString("code")
		if code == "" {
			fmt.Fprint(out, "code: ")
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			if err != nil && line == "" {
				return fmt.Errorf("no code on standard input")
			}
			code = strings.TrimSpace(line)
		}
		creds, err = api.CheckSMS(ctx, number, id, code)
		if err != nil {
			return refusedLogin(err)
		}
	case "mo":
		tok, err := api.StartMO(ctx, id)
		if err != nil {
			return refusedLogin(err)
		}
		fmt.Fprintf(out, "send an SMS with the text %q to %s (valid until %s)\n", tok.Token, tok.ShortNumber, tok.ExpiresAt.Local().Format(time.Kitchen))
		for {
			p, err := api.PollMO(ctx, tok, 25*time.Second)
			if err != nil {
				return refusedLogin(err)
			}
			if p.State == "proven" {
				creds = p.Credentials
				break
			}
		}
	case "header":
		h, _ := cmd.Flags().GetString("header")
		creds, err = api.RegisterHeader(ctx, h, number, id)
	case "client":
		creds, err = api.RegisterClient(ctx, number, id)
	default:
		return fmt.Errorf("--method: %q is not sms, mo, header or client", method)
	}
	if err != nil {
		return refusedLogin(err)
	}
	server, _ := cmd.Flags().GetString("server")
	relayAddr, _ := cmd.Flags().GetString("relay")
	path, _ := cmd.Flags().GetString("state")
	st := phoneState{Server: server, Relay: relayAddr, Number: creds.Number, DeviceID: dev, SIMID: sim, DeviceKey: creds.DeviceKey}
	if err := savePhone(path, st); err != nil {
		return err
	}
	fmt.Fprintf(out, "registered %s (new account: %v); device key kept in %s\n", creds.Number, creds.Created, path)
	return nil
}

// phoneConnect logs in over HTTP and opens the relay connection.
func phoneConnect(cmd *cobra.Command) (*client.Client, phoneState, error) {
	st, sess, err := phoneLogin(cmd)
	if err != nil {
		return nil, st, err
	}
	c, err := client.Dial(cmd.Context(), st.Relay, client.Options{Token: sess.Token, DeviceID: st.DeviceID, ClientVersion: "phonebook-phone/" + version, AutoAck: true})
	if err != nil {
		return nil, st, refusedLogin(fmt.Errorf("relay %s: %w", st.Relay, err))
	}
	st.token = sess.Token
	return c, st, nil
}

// phoneLogin logs in over HTTP with the kept device key.
func phoneLogin(cmd *cobra.Command) (phoneState, client.Session, error) {
	ctx := cmd.Context()
	path, _ := cmd.Flags().GetString("state")
	st, err := loadPhone(path)
	if err != nil {
		return st, client.Session{}, err
	}
	if cmd.Flags().Changed("server") || st.Server == "" {
		st.Server, _ = cmd.Flags().GetString("server")
	}
	if cmd.Flags().Changed("relay") || st.Relay == "" {
		st.Relay, _ = cmd.Flags().GetString("relay")
	}
	api := &client.API{BaseURL: st.Server}
	sess, err := api.Login(ctx, st.Number, client.Identity{DeviceID: st.DeviceID, SIMID: st.SIMID}, st.DeviceKey, os.Getenv("PHONEBOOK_RESCUE_PASSWORD"))
	if err != nil {
		return st, sess, refusedLogin(fmt.Errorf("login: %w", err))
	}
	return st, sess, nil
}

func phoneChat(cmd *cobra.Command, args []string) error {
	return phoneSession(cmd, cmd.InOrStdin())
}

// phoneSession logs in, sends every `NUMBER text` line read from in, and
// prints deliveries, send results and receipts; it ends when in ends and
// --wait has passed (or, for chat, when the connection or input closes).
func phoneSession(cmd *cobra.Command, in io.Reader) error {
	c, st, err := phoneConnect(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(cmd.OutOrStdout(), "online as %s (session %s)\n", st.Number, c.SessionID)
	pm, err := newPhoneMedia(cmd, st)
	if err != nil {
		return err
	}
	return phoneSessionWith(cmd, c, in, pm)
}

// phoneSessionOn is phoneSession on an open connection. Input lines are
// handled one at a time, in order: a command's answer comes before the
// next line is read, and messages go out in the order written. At the end
// of the input it waits for the answers still due, then prints what
// arrives for --wait.
func phoneSessionOn(cmd *cobra.Command, c *client.Client, in io.Reader) error {
	return phoneSessionWith(cmd, c, in, nil)
}

// phoneSessionWith is phoneSessionOn that sends pm's uploads with each
// message and saves the media that arrive (pm nil: neither).
func phoneSessionWith(cmd *cobra.Command, c *client.Client, in io.Reader, pm *phoneMedia) error {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	wait, timeout := 24*time.Hour, 30*time.Second
	if f := cmd.Flags().Lookup("wait"); f != nil {
		wait, _ = cmd.Flags().GetDuration("wait")
	}
	if f := cmd.Flags().Lookup("timeout"); f != nil {
		timeout, _ = cmd.Flags().GetDuration("timeout")
	}
	// Every goroutine hands its lines to the loop below through printer;
	// none closes it (some may still be running when the session ends), and
	// quit releases those that would wait for a loop that has returned.
	printer := make(chan string, 64)
	quit := make(chan struct{})
	defer close(quit)
	say := func(line string) {
		select {
		case printer <- line:
		case <-quit:
		}
	}
	go printIncoming(c, say, quit, pm)

	var refused, unanswered atomic.Int64
	answered := make(chan struct{}) // the input ended and every line has its answer
	go func() {
		defer close(answered)
		var pending sync.WaitGroup
		defer pending.Wait()
		sc := bufio.NewScanner(in)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" {
				continue
			}
			if strings.HasPrefix(line, "/") {
				msg, err := phoneChatCommand(ctx, c, line)
				if err != nil {
					refused.Add(1)
				}
				say(msg)
				continue
			}
			to, text, _ := strings.Cut(line, " ")
			text = strings.TrimSpace(text)
			if text == "" && pm.sendsNothing() {
				say("type: NUMBER text, or /status TEXT, /im busy|away|online, /activity WORD, /who")
				continue
			}
			p, err := pm.send(c, to, text)
			if err != nil {
				unanswered.Add(1)
				say(fmt.Sprintf("not sent -> %s: %v", to, err))
				return // the connection is gone
			}
			pending.Add(1)
			go func() {
				defer pending.Done()
				wctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				res, err := p.Wait(wctx)
				switch {
				case err != nil:
					unanswered.Add(1)
					say(fmt.Sprintf("no answer for %s -> %s (%v): it may or may not have been accepted", p.ClientMsgID, to, err))
				case res.GetState() == relaypb.MessageState_FAILED:
					refused.Add(1)
					say(fmt.Sprintf("not sent %s -> %s: %s", res.ClientMsgId, to, reason(res.GetError())))
				default:
					say(fmt.Sprintf("sent %s -> %s: %s", res.ClientMsgId, to, stateName(res.State)))
				}
			}()
		}
		if err := sc.Err(); err != nil {
			say(fmt.Sprintf("reading input: %v", err))
		}
	}()

	// outcome drains what is left to print and turns the counts into the
	// exit status.
	outcome := func(err error) error {
		for {
			select {
			case s := <-printer:
				fmt.Fprintln(out, s)
				continue
			default:
			}
			break
		}
		switch {
		case err != nil:
			return err
		case refused.Load() > 0:
			return &exitError{code: exitRefused, err: fmt.Errorf("the server refused %d message(s) or command(s)", refused.Load())}
		case unanswered.Load() > 0:
			return &exitError{code: exitNoAnswer, err: fmt.Errorf("%d message(s) without an answer", unanswered.Load())}
		}
		return nil
	}
	var waitDone <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return outcome(nil)
		case <-waitDone:
			return outcome(nil)
		case s := <-printer:
			fmt.Fprintln(out, s)
		case <-answered:
			answered = nil
			waitDone = time.After(wait)
		case <-c.Done():
			select {
			case <-answered: // every answer came before the connection ended
			case <-time.After(100 * time.Millisecond):
			}
			return outcome(c.Err())
		}
	}
}

// printIncoming prints what the server sends on its own: messages,
// receipts, presence, contacts joining.
func printIncoming(c *client.Client, say func(string), quit <-chan struct{}, pm *phoneMedia) {
	for {
		select {
		case d, ok := <-c.Deliveries():
			if !ok {
				return // the connection ended
			}
			tag := ""
			if d.Type == relaypb.MessageType_SMS {
				tag += " [SMS reply]" // from someone without the app, answering by SMS
			}
			if d.Offline {
				tag += " [stored]"
			}
			if d.ViaSms {
				tag += " [also sent by SMS]"
			}
			say(fmt.Sprintf("%s %s: %s%s", time.UnixMicro(d.GetSentAt()).Local().Format("15:04:05"), d.From, d.Text, tag))
			for _, line := range pm.save(d) {
				say(line)
			}
		case r, ok := <-c.Receipts():
			if !ok {
				return
			}
			line := fmt.Sprintf("receipt %s: %s", r.ClientMsgId, stateName(r.State))
			if r.Error != nil {
				line += " (" + reason(r.Error) + ")"
			}
			say(line)
		case list := <-c.PresenceLists():
			say(fmt.Sprintf("%d contact(s) visible", len(list)))
			for _, p := range list {
				say("  " + formatPresence(p))
			}
		case pc := <-c.PresenceChanges():
			say(fmt.Sprintf("%s presence %s", time.Now().Format("15:04:05"), formatPresence(pc.Presence)))
		case j := <-c.ContactJoins():
			say(fmt.Sprintf("%s contact joined Phonebook: %s", time.UnixMicro(j.At).Local().Format("15:04:05"), j.Number))
		case <-c.Done():
			return
		case <-quit:
			return
		}
	}
}

// reason renders the server's error as "code: message".
func reason(e *relaypb.Error) string {
	if e == nil {
		return "no reason given"
	}
	if e.GetMessage() == "" {
		return e.GetCode()
	}
	return e.GetCode() + ": " + e.GetMessage()
}

func stateName(s relaypb.MessageState) string {
	return strings.ToLower(s.String())
}
