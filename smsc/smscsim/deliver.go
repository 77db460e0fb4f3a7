package smscsim

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/fiorix/go-smpp/smpp/pdu/pdutext"
	"github.com/fiorix/go-smpp/smpp/pdu/pdutlv"

	"github.com/phonebook/phonebook/smsc/internal/wire"
)

// messageStates maps receipt stat: words to message_state TLV values.
var messageStates = map[string]uint8{
	"ENROUTE": 1, "DELIVRD": 2, "EXPIRED": 3, "DELETED": 4,
	"UNDELIV": 5, "ACCEPTD": 6, "UNKNOWN": 7, "REJECTD": 8,
}

// delivery is one deliver_sm to send, and resend until answered ESME_ROK.
type delivery struct {
	systemID string // "" = any receiver
	sm       wire.SM
	dataSM   bool // send as data_sm rather than deliver_sm
}

// wantReceipt applies registered_delivery: 1 = always, 2 = on failure only.
func wantReceipt(rd uint8, stat string) bool {
	switch rd & 0x03 {
	case 1:
		return true
	case 2:
		return stat != "DELIVRD"
	}
	return false
}

// receipt builds the delivery receipt for an accepted submit.
func (s *Sim) receipt(sub Submit, n uint64) delivery {
	stat := sub.Receipt
	id := s.formatID(n, s.cfg.ReceiptIDStyle)
	dlvrd := "000"
	if stat == "DELIVRD" {
		dlvrd = "001"
	}
	sm := wire.SM{
		SourceTON:  sub.DestTON,
		SourceNPI:  sub.DestNPI,
		Source:     sub.Dest,
		DestTON:    sub.SourceTON,
		DestNPI:    sub.SourceNPI,
		Dest:       sub.Source,
		ESMClass:   0x04,
		DataCoding: 0,
		TLVs:       pdutlv.Map{},
	}
	if strings.Contains(s.cfg.ReceiptFormat, "text") {
		const layout = "0601021504"
		done := sub.Time.Add(s.cfg.ReceiptDelay)
		sm.ShortMessage = fmt.Appendf(nil, "id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%03d text:%s",
			id, dlvrd, sub.Time.UTC().Format(layout), done.UTC().Format(layout), stat, s.cfg.ReceiptErr, printable(sub.Text, 20))
	}
	if strings.Contains(s.cfg.ReceiptFormat, "tlv") {
		sm.TLVs[0x001E] = pdutlv.NewTLV(0x001E, append([]byte(id), 0))
		sm.TLVs[0x0427] = pdutlv.NewTLV(0x0427, []byte{messageStates[stat]})
		if e := s.cfg.ReceiptErr; e != 0 {
			sm.TLVs[0x0423] = pdutlv.NewTLV(0x0423, []byte{3, byte(e >> 8), byte(e)}) // GSM network error
		}
	}
	return delivery{systemID: sub.SystemID, sm: sm}
}

// printable keeps the first n characters of s in ASCII, for receipt text.
func printable(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if n == 0 {
			break
		}
		if r < 0x20 || r > 0x7E {
			r = '?'
		}
		b.WriteRune(r)
		n--
	}
	return b.String()
}

func (s *Sim) deliverAsync(d delivery, first *session, seq uint32, sent chan struct{}) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deliver(d, first, seq, sent)
	}()
}

// deliver sends d until a receiver answers ESME_ROK or the simulator closes.
// The first attempt may be pinned to a session and sequence number; sent is
// closed once the first attempt is written (or found impossible).
func (s *Sim) deliver(d delivery, first *session, seq uint32, sent chan struct{}) bool {
	for attempt := 0; ; attempt++ {
		ss := first
		if attempt > 0 || ss == nil {
			ss, seq = s.receiver(d.systemID), 0
		}
		if ss != nil {
			st, err := ss.sendDeliver(d, seq, sent)
			sent = nil
			if err == nil && st == 0 {
				s.count(func(st *Stats) { st.Delivered++ })
				return true
			}
			s.count(func(st *Stats) { st.DeliverRefused++ })
			s.log.Info("deliver_sm not accepted; will redeliver", "status", fmt.Sprintf("0x%02X", uint32(st)), "err", err)
		} else if sent != nil {
			close(sent)
			sent = nil
		}
		if !sleepOrClosed(s.closed, s.cfg.RedeliverAfter) {
			return false
		}
	}
}

// InjectMO sends a mobile-originated SMS from a handset (from, E.164) to
// the service (to) to one bound receiver of every system_id, splitting long
// text with a concatenation UDH and choosing GSM 7-bit or UCS-2. It returns
// once every part was accepted (ESME_ROK); refused parts are redelivered.
func (s *Sim) InjectMO(ctx context.Context, from, to, text string) error {
	if from == "" || to == "" {
		return errors.New("smscsim: MO needs from and to")
	}
	dc, parts, err := encodeMO(text, uint8(s.nextRef.Add(1)))
	if err != nil {
		return err
	}
	systems := s.receiverSystems()
	if len(systems) == 0 {
		return errors.New("smscsim: no receiver is bound")
	}
	fmt.Fprintf(s.cfg.Output, "smscsim: MO %s -> %s: %s\n", from, to, text)
	srcTON, srcNPI := addrType(from)
	dstTON, dstNPI := addrType(to)
	results := make(chan bool, len(systems)*len(parts))
	for _, sys := range systems {
		for _, p := range parts {
			esm := uint8(0)
			if len(parts) > 1 {
				esm = 0x40
			}
			d := delivery{systemID: sys, sm: wire.SM{
				SourceTON: srcTON, SourceNPI: srcNPI, Source: strings.TrimPrefix(from, "+"),
				DestTON: dstTON, DestNPI: dstNPI, Dest: strings.TrimPrefix(to, "+"),
				ESMClass: esm, DataCoding: dc, ShortMessage: p,
			}, dataSM: s.cfg.MOAsDataSM}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				results <- s.deliver(d, nil, 0, nil)
			}()
		}
	}
	for range cap(results) {
		select {
		case ok := <-results:
			if !ok {
				return errors.New("smscsim: closed before the MO was delivered")
			}
		case <-ctx.Done():
			return fmt.Errorf("smscsim: MO not yet accepted (redelivery continues): %w", ctx.Err())
		}
	}
	return nil
}

func addrType(a string) (ton, npi uint8) {
	d := strings.TrimPrefix(a, "+")
	if strings.Trim(d, "0123456789") != "" {
		return 5, 0 // alphanumeric
	}
	if strings.HasPrefix(a, "+") || len(d) > 8 {
		return 1, 1
	}
	return 3, 0
}

// encodeMO encodes text as GSM 7-bit (unpacked) when it can, else UCS-2,
// split into parts of at most 140 octets with an 8-bit-reference
// concatenation UDH, never cutting an escape or surrogate pair.
func encodeMO(text string, ref uint8) (uint8, [][]byte, error) {
	var dc uint8
	var enc []byte
	var single, multi int
	var cutOK func(b []byte, i int) bool
	if gsm, ok := wire.EncodeGSM7(text); ok {
		dc, enc, single, multi = 0, gsm, 160, 153
		cutOK = func(b []byte, i int) bool { return b[i-1] != wire.Esc }
	} else {
		dc, enc, single, multi = 8, pdutext.UCS2(text).Encode(), 140, 134
		cutOK = func(b []byte, i int) bool {
			hi := binary.BigEndian.Uint16(b[i-2:])
			return hi < 0xD800 || hi > 0xDBFF
		}
	}
	if len(enc) <= single {
		return dc, [][]byte{enc}, nil
	}
	var chunks [][]byte
	for len(enc) > 0 {
		n := min(multi, len(enc))
		if n < len(enc) {
			for !cutOK(enc, n) {
				n -= 1 + int(dc/8) // back one septet, or one UTF-16 unit
			}
		}
		chunks = append(chunks, enc[:n])
		enc = enc[n:]
	}
	if len(chunks) > 255 {
		return 0, nil, fmt.Errorf("smscsim: text needs %d parts, at most 255", len(chunks))
	}
	parts := make([][]byte, len(chunks))
	for i, c := range chunks {
		parts[i] = append([]byte{5, 0, 3, ref, byte(len(chunks)), byte(i + 1)}, c...)
	}
	return dc, parts, nil
}

// stripUDH returns the message without its user data header.
func stripUDH(esm uint8, b []byte) []byte {
	if esm&0x40 == 0 || len(b) == 0 || int(b[0])+1 > len(b) {
		return b
	}
	return b[int(b[0])+1:]
}

// concat reads a concatenation information element (8- or 16-bit reference).
func concat(esm uint8, b []byte) (ref uint16, total, seq uint8, ok bool) {
	if esm&0x40 == 0 || len(b) == 0 || int(b[0])+1 > len(b) {
		return 0, 0, 0, false
	}
	ies := b[1 : int(b[0])+1]
	for len(ies) >= 2 {
		iei, l := ies[0], int(ies[1])
		if len(ies) < 2+l {
			return 0, 0, 0, false
		}
		v := ies[2 : 2+l]
		switch {
		case iei == 0x00 && l == 3:
			return uint16(v[0]), v[1], v[2], v[1] > 0
		case iei == 0x08 && l == 4:
			return binary.BigEndian.Uint16(v), v[2], v[3], v[2] > 0
		}
		ies = ies[2+l:]
	}
	return 0, 0, 0, false
}

func decodeText(dc uint8, b []byte) string {
	switch dc {
	case 0:
		// The link's own codec: what the sim shows is what the link meant.
		if text, err := wire.DecodeGSM7(b); err == nil {
			return text
		}
	case 1:
		return string(b)
	case 3:
		return string(pdutext.Latin1(b).Decode())
	case 8:
		return string(pdutext.UCS2(b).Decode())
	}
	return "0x" + hex.EncodeToString(b)
}

type concatKey struct {
	systemID, source, dest string
	ref                    uint16
}

type concatParts struct {
	total uint8
	texts map[uint8]string
	first time.Time
}

// print writes a received SMS to Output, reassembling concatenated parts.
func (s *Sim) print(sub Submit) {
	text := sub.Text
	if ref, total, seq, ok := concat(sub.ESMClass, sub.Payload); ok && total > 1 {
		k := concatKey{sub.SystemID, sub.Source, sub.Dest, ref}
		s.mu.Lock()
		if len(s.concat) > 1000 { // abandoned parts: forget them rather than grow
			clear(s.concat)
		}
		p := s.concat[k]
		if p == nil || p.total != total {
			p = &concatParts{total: total, texts: make(map[uint8]string), first: sub.Time}
			s.concat[k] = p
		}
		p.texts[seq] = sub.Text
		if len(p.texts) < int(total) {
			s.mu.Unlock()
			return
		}
		delete(s.concat, k)
		s.mu.Unlock()
		var b strings.Builder
		for i := uint8(1); i <= total; i++ {
			b.WriteString(p.texts[i])
		}
		text = b.String()
	}
	fmt.Fprintf(s.cfg.Output, "smscsim: SMS to +%s from %s: %s\n", sub.Dest, sub.Source, text)
}
