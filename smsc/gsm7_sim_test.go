package smsc_test

import (
	"testing"

	"github.com/phonebook/phonebook/internal/poll"
	"github.com/phonebook/phonebook/smsc"
	"github.com/phonebook/phonebook/smsc/internal/wire"
	"github.com/phonebook/phonebook/smsc/smscsim"
)

// The link and the simulator share one GSM 03.38 codec: every character of
// the default alphabet and the extension table the link submits is the one
// the simulator reads, and an MO the simulator sends is what the link reads.
func TestGSM7AlphabetThroughLinkAndSimulator(t *testing.T) {
	var d deliveries
	sim, r := simAndRouter(t, smscsim.Config{}, d.handle)
	all := wire.GSM7Alphabet()
	enc, err := smsc.Encode(all)
	if err != nil || enc.DataCoding != smsc.CodingGSM7 {
		t.Fatalf("encode: coding %d, %v", enc.DataCoding, err)
	}
	parts, err := enc.Parts(1, 0)
	if err != nil || len(parts) != 1 {
		t.Fatalf("parts: %d, %v", len(parts), err)
	}
	p := parts[0]
	p.Dest = cnMobile
	if _, err := r.Submit(ctxT(t), p); err != nil {
		t.Fatal(err)
	}
	if subs := sim.Submits(); len(subs) != 1 || subs[0].DataCoding != smsc.CodingGSM7 || subs[0].Text != all {
		t.Fatalf("the simulator read %+v; want %q", subs, all)
	}

	if err := sim.InjectMO(ctxT(t), "+8613900001111", "10690", all); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, "the MO", func() bool { return len(d.list()) == 1 })
	mo := d.list()[0]
	if got, err := smsc.DecodeText(mo.DataCoding, mo.Payload); err != nil || got != all {
		t.Fatalf("the link read %q (coding %d), %v; want %q", got, mo.DataCoding, err, all)
	}
}
