package config

import "testing"

// The shipped example must load and must spell every key that exists.
func TestExampleFileLoads(t *testing.T) {
	c, err := Load("phonebook.example.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if c.HTTP.Addr != d.HTTP.Addr || c.Verify.Template != d.Verify.Template || c.Relay.Fallback != d.Relay.Fallback {
		t.Fatalf("example differs from the defaults it documents: %+v", c)
	}
}
