package main

import (
	"context"
	"fmt"

	"github.com/phonebook/phonebook/config"
	"github.com/phonebook/phonebook/contacts"
)

// contactsConfig is the contacts service's part of the configuration.
func contactsConfig(cfg config.Config) contacts.Config {
	c := cfg.Contacts
	return contacts.Config{
		Visibility:            contacts.Visibility(c.Visibility),
		LookupCapacity:        int64(c.LookupCapacity),
		LookupRefillPerSecond: c.LookupRefillPerS,
	}
}

// startContacts starts the contacts and presence service, adds its HTTP
// endpoints and tells it about new users. Pushes go nowhere until the
// relay sets itself as the notifier (startRelay).
func startContacts(ctx context.Context, m *Main) error {
	svc, err := contacts.New(m.DB, nil, contactsConfig(m.cfg), m.log, m.reg)
	if err != nil {
		return fmt.Errorf("contacts: %w", err)
	}
	m.Contacts = svc
	m.API.SetContacts(svc)
	m.closers = append(m.closers, svc.Close)
	// Those online who have a new user's number in their book learn that
	// the contact joined.
	m.Accounts.OnRegistered(svc.UserRegistered)
	return nil
}
