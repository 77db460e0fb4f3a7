package main

import (
	"github.com/spf13/cobra"

	"github.com/phonebook/phonebook/smsc/smscsim"
)

func init() {
	extraCommands = append(extraCommands, func() *cobra.Command { return smscsim.Command() })
}
