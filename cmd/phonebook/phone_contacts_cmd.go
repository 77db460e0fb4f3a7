package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/contacts"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
)

func init() {
	phoneExtras = append(phoneExtras, newPhoneContactsCmd, newPhoneStatusCmd)
}

// syncFrameBudget is how many bytes of entries one ContactsSync frame
// carries: well under the relay's default 64 KiB frame limit.
const syncFrameBudget = 48 << 10

func newPhoneContactsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "contacts",
		Short: "The phone's address book: import a vCard file over the relay, list what the server keeps",
	}
	imp := &cobra.Command{
		Use:   "import FILE.vcf",
		Short: "Sync the cards of a vCard file (2.1, 3.0, 4.0) as the phone's address book and print what each became",
		Args:  cobra.ExactArgs(1),
		RunE:  phoneContactsImport,
	}
	imp.Flags().Bool("add", false, "add the cards to the book instead of replacing it")
	imp.Flags().String("region", "", "region for numbers without a country code (default: the region of the phone's number)")
	list := &cobra.Command{
		Use:   "list",
		Short: "Print the address book as the server keeps it (the restore view), with each number's state",
		Args:  cobra.NoArgs,
		RunE:  phoneContactsList,
	}
	c.AddCommand(imp, list)
	return c
}

func phoneContactsImport(cmd *cobra.Command, args []string) error {
	out := cmd.OutOrStdout()
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	cards, err := contacts.ParseVCards(io.LimitReader(f, contacts.MaxVCardBytes))
	f.Close()
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	entries := contacts.Entries(cards)
	add, _ := cmd.Flags().GetBool("add")
	region, _ := cmd.Flags().GetString("region")
	c, _, err := phoneConnect(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	names := make(map[string]string, len(entries))
	var pes []*relaypb.ContactEntry
	for _, e := range entries {
		names[e.ID] = e.Name
		pe := &relaypb.ContactEntry{Id: e.ID, Name: e.Name, Group: e.Group}
		for _, p := range e.Phones {
			pe.Phones = append(pe.Phones, &relaypb.ContactPhone{Number: p.Number, Label: p.Label})
		}
		pes = append(pes, pe)
	}
	// A book too large for one frame goes as a full sync of its first part
	// and deltas adding the rest.
	var last *relaypb.ContactsSyncResult
	counts := map[string]int{}
	for i, part := range relay.SplitBySize(pes, syncFrameBudget) {
		req := &relaypb.ContactsSync{Region: region}
		if i == 0 && !add {
			req.Full, req.Entries = true, part
		} else {
			req.Added = part
		}
		res, err := c.SyncContacts(cmd.Context(), req)
		if err != nil {
			return err
		}
		for _, er := range res.Entries {
			printEntryResult(out, names[er.Id], er, counts)
		}
		last = res
	}
	fmt.Fprintf(out, "%d card(s) read: %d on Phonebook (%d mutual), %d not yet, %d without a valid number; the book now holds %d entries, %d contacts\n",
		len(entries), counts["registered"], counts["mutual"], counts["not registered"], counts["invalid"], last.GetBookEntries(), last.GetContacts())
	return nil
}

func printEntryResult(w io.Writer, name string, er *relaypb.EntryResult, counts map[string]int) {
	if name == "" {
		name = "(no name)"
	}
	if er.Error != "" {
		counts["invalid"]++ // each phone says why below
	}
	for _, p := range er.Phones {
		var state string
		switch {
		case p.Error != "":
			state = "invalid number: " + p.Reason
		case p.Self:
			state = "your own number"
		case p.Registered && p.Mutual:
			counts["registered"]++
			counts["mutual"]++
			state = "on Phonebook, mutual"
			if p.Presence != nil {
				state += ", " + formatStatus(p.Presence)
			}
		case p.Registered:
			counts["registered"]++
			state = "on Phonebook"
		default:
			counts["not registered"]++
			state = "not on Phonebook (messages go by SMS)"
		}
		number := p.Number
		if number == "" {
			number = strconv.Quote(p.Raw)
		}
		fmt.Fprintf(w, "%-20s %-16s %s\n", name, number, state)
	}
}

func phoneContactsList(cmd *cobra.Command, args []string) error {
	ctx := cmd.Context()
	out := cmd.OutOrStdout()
	st, sess, err := phoneLogin(cmd)
	if err != nil {
		return err
	}
	api := &client.API{BaseURL: st.Server}
	var book struct{ Entries []contacts.Entry }
	if err := api.Do(ctx, "GET", "/v1/contacts/restore", sess.Token, nil, &book); err != nil {
		return err
	}
	var list struct{ Contacts []contacts.Contact }
	if err := api.Do(ctx, "GET", "/v1/contacts", sess.Token, nil, &list); err != nil {
		return err
	}
	state := make(map[string]string, len(list.Contacts))
	for _, c := range list.Contacts {
		switch {
		case c.Registered && c.Presence != nil:
			state[string(c.Number)] = "on Phonebook, mutual, " + formatStatus(relay.PresenceToProto(c.Presence))
		case c.Registered && c.Mutual:
			state[string(c.Number)] = "on Phonebook, mutual"
		case c.Registered:
			state[string(c.Number)] = "on Phonebook"
		default:
			state[string(c.Number)] = "not on Phonebook"
		}
	}
	// Numbers as the server normalised them, to show each phone's state.
	for _, e := range book.Entries {
		group := ""
		if e.Group != "" {
			group = " [" + e.Group + "]"
		}
		fmt.Fprintf(out, "%s%s (id %s)\n", e.Name, group, e.ID)
		for _, p := range e.Phones {
			label := p.Label
			if label == "" {
				label = "phone"
			}
			s := "invalid number"
			if n, err := normalizeFor(st.Number, p.Number); err == nil {
				s = state[n]
				if n == st.Number {
					s = "your own number"
				}
			}
			fmt.Fprintf(out, "  %-8s %-20s %s\n", label, p.Number, s)
		}
	}
	fmt.Fprintf(out, "%d entries, %d contacts\n", len(book.Entries), len(list.Contacts))
	return nil
}

func newPhoneStatusCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "status",
		Short: "Set what contacts see of this phone: IM status, status text, activity (only the flags given change)",
		Long: `status logs the phone in, changes its presence over the relay connection and
prints it. The phone is online only while connected: with --wait it stays online
that long, printing what arrives (as listen does); without, it goes offline again
when the command ends. A phone already connected elsewhere with the same state file
is replaced (session_replaced).`,
		Example: `  phonebook phone status --im busy --text "in a meeting" --wait 10m
  phonebook phone status --activity in_call
  phonebook phone status --text ""          # clear the text`,
		Args: cobra.NoArgs,
		RunE: phoneStatus,
	}
	c.Flags().String("im", "", "online, busy or away")
	c.Flags().String("text", "", "status text (at most 100 characters; \"\" clears it)")
	c.Flags().String("activity", "", "what the phone is doing: in_call, browsing, flip_open... (\"\" clears it)")
	c.Flags().String("nickname", "", "nickname shown to contacts")
	c.Flags().String("signature", "", "signature shown to contacts")
	c.Flags().String("site", "", "personal site (http or https address)")
	c.Flags().String("visibility", "", "who sees this: mutual, contacts or nobody")
	c.Flags().Duration("wait", 0, "stay online this long afterwards, printing what arrives")
	return c
}

func phoneStatus(cmd *cobra.Command, args []string) error {
	u := &relaypb.PresenceSet{}
	for flag, field := range map[string]**string{
		"im": &u.ImStatus, "text": &u.StatusText, "activity": &u.Activity, "nickname": &u.Nickname,
		"signature": &u.Signature, "site": &u.Site, "visibility": &u.Visibility,
	} {
		if cmd.Flags().Changed(flag) {
			v, _ := cmd.Flags().GetString(flag)
			*field = &v
		}
	}
	c, _, err := phoneConnect(cmd)
	if err != nil {
		return err
	}
	defer c.Close()
	p, err := c.SetPresence(cmd.Context(), u)
	if err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s is %s; visible to %s\n", p.Number, formatStatus(p), p.Visibility)
	if wait, _ := cmd.Flags().GetDuration("wait"); wait > 0 {
		return phoneSessionOn(cmd, c, strings.NewReader(""))
	}
	return nil
}

// phoneChatCommand runs a chat line starting with "/" on the open
// connection and returns what to print, and the server's refusal.
func phoneChatCommand(ctx context.Context, c *client.Client, line string) (string, error) {
	name, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	u := &relaypb.PresenceSet{}
	switch name {
	case "/who":
		list, err := c.QueryPresence(ctx)
		if err != nil {
			return "who: " + err.Error(), err
		}
		lines := []string{fmt.Sprintf("%d contact(s) visible", len(list))}
		for _, p := range list {
			lines = append(lines, "  "+formatPresence(p))
		}
		return strings.Join(lines, "\n"), nil
	case "/status":
		u.StatusText = &arg
	case "/im":
		u.ImStatus = &arg
	case "/activity":
		u.Activity = &arg
	default:
		return "commands: /status TEXT, /im busy|away|online, /activity WORD (empty clears), /who",
			fmt.Errorf("unknown command %q", name)
	}
	p, err := c.SetPresence(ctx, u)
	if err != nil {
		return "status: " + err.Error(), err
	}
	return "you are " + formatStatus(p), nil
}

// formatPresence renders a contact's presence on one line.
func formatPresence(p *relaypb.Presence) string {
	return p.GetNumber() + " " + formatStatus(p)
}

func formatStatus(p *relaypb.Presence) string {
	var b strings.Builder
	b.WriteString(p.GetImStatus())
	if p.GetStatusText() != "" {
		fmt.Fprintf(&b, " %q", p.GetStatusText())
	}
	if p.GetActivity() != "" {
		fmt.Fprintf(&b, " (%s)", p.GetActivity())
	}
	if p.GetNickname() != "" {
		fmt.Fprintf(&b, " nickname %q", p.GetNickname())
	}
	return b.String()
}

// normalizeFor normalises a number from owner's book as the server did.
func normalizeFor(owner, raw string) (string, error) {
	n, err := phonebook.NormalizeMSISDN(raw, phonebook.RegionOf(phonebook.MSISDN(owner)))
	return string(n), err
}
