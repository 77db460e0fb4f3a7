package mms

import (
	"context"
	"time"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/store"
)

// CapabilityStore is what Capabilities needs from persistence; *store.DB
// has it.
type CapabilityStore interface {
	SetMMSCapability(ctx context.Context, cs ...store.MMSCapability) error
	MMSCapabilities(ctx context.Context, number phonebook.MSISDN) ([]store.MMSCapability, error)
	DeleteMMSCapability(ctx context.Context, number phonebook.MSISDN, source string) (bool, error)
}

var _ CapabilityStore = (*store.DB)(nil)

// Capabilities says who can receive MMS. Its sources, strongest first:
//   - the operator's provisioning (admin CLI, admin HTTP): always wins;
//   - the newer of the handset's own report at login and an MMSC's "not
//     MMS-capable" answer;
//   - the default for the number's prefix (Config.CapablePrefixes);
//   - otherwise not capable: the message goes as an SMS with a link.
type Capabilities struct {
	db       CapabilityStore
	prefixes []string
}

// NewCapabilities returns the capability rules over db with the default
// capable prefixes.
func NewCapabilities(db CapabilityStore, capablePrefixes []string) *Capabilities {
	return &Capabilities{db: db, prefixes: capablePrefixes}
}

// Verdict is what Capabilities decided about a number, and why.
type Verdict struct {
	Capable bool
	Source  string // operator, client, mmsc, prefix, or none
	Since   time.Time
	Reports []store.MMSCapability // every source's word, for operators
}

// Capable decides whether number can receive MMS.
func (c *Capabilities) Capable(ctx context.Context, number phonebook.MSISDN) (Verdict, error) {
	cs, err := c.db.MMSCapabilities(ctx, number)
	if err != nil {
		return Verdict{}, err
	}
	v := Verdict{Reports: cs}
	var newest *store.MMSCapability
	for i, r := range cs {
		if r.Source == store.CapabilityOperator {
			v.Capable, v.Source, v.Since = r.Capable, r.Source, r.UpdatedAt
			return v, nil
		}
		if newest == nil || r.UpdatedAt.After(newest.UpdatedAt) {
			newest = &cs[i]
		}
	}
	if newest != nil {
		v.Capable, v.Source, v.Since = newest.Capable, newest.Source, newest.UpdatedAt
		return v, nil
	}
	if longestPrefix(c.prefixes, string(number)) >= 0 {
		v.Capable, v.Source = true, "prefix"
		return v, nil
	}
	v.Source = "none"
	return v, nil
}

// Report records what a source says about a number.
func (c *Capabilities) Report(ctx context.Context, number phonebook.MSISDN, source string, capable bool) error {
	return c.db.SetMMSCapability(ctx, store.MMSCapability{Number: number, Source: source, Capable: capable})
}

// ClientReport implements the login hook: the handset said whether it can
// receive MMS.
func (c *Capabilities) ClientReport(ctx context.Context, number phonebook.MSISDN, capable bool) error {
	return c.Report(ctx, number, store.CapabilityClient, capable)
}

// Provision records the operator's word for many numbers at once.
func (c *Capabilities) Provision(ctx context.Context, numbers []phonebook.MSISDN, capable bool) error {
	cs := make([]store.MMSCapability, len(numbers))
	for i, n := range numbers {
		cs[i] = store.MMSCapability{Number: n, Source: store.CapabilityOperator, Capable: capable}
	}
	return c.db.SetMMSCapability(ctx, cs...)
}

// Forget removes what source ("" = every source) said about number.
func (c *Capabilities) Forget(ctx context.Context, number phonebook.MSISDN, source string) (bool, error) {
	return c.db.DeleteMMSCapability(ctx, number, source)
}
