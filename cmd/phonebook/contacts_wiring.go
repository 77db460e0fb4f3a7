package main

import (
	"context"
	"fmt"

	"github.com/phonebook/phonebook/contacts"
)

func init() { extraStarters = append(extraStarters, startContacts) }

// startContacts starts the contacts and presence service and adds its HTTP
// endpoints. Pushes go nowhere until the relay sets itself as the notifier
// (m.Contacts.SetNotifier).
func startContacts(ctx context.Context, m *Main) error {
	c := m.cfg.Contacts
	svc, err := contacts.New(m.DB, nil, contacts.Config{
		Visibility:            contacts.Visibility(c.Visibility),
		LookupCapacity:        int64(c.LookupCapacity),
		LookupRefillPerSecond: c.LookupRefillPerS,
	}, m.log, m.reg)
	if err != nil {
		return fmt.Errorf("contacts: %w", err)
	}
	m.Contacts = svc
	m.API.SetContacts(svc)
	m.closers = append(m.closers, svc.Close)
	return nil
}
