package phonebook

import (
	"strings"

	"github.com/nyaruka/phonenumbers"
)

// MSISDN is a phone number in E.164 form: "+8613800138000". It is the user's
// identity everywhere in the system; build one only with NormalizeMSISDN.
type MSISDN string

// NormalizeMSISDN turns a number as people and phone books write it
// ("138 0013 8000", "+86 138-0013-8000", "008613800138000", "tel:+86...") into
// E.164, using region (ISO 3166 alpha-2, e.g. "CN") for national formats.
// Extensions are dropped: they do not reach a handset. Anything that is not a
// valid number gets an EInvalidNumber error.
func NormalizeMSISDN(raw, region string) (MSISDN, error) {
	s := strings.TrimSpace(raw)
	s = strings.TrimPrefix(s, "tel:")
	if s == "" {
		return "", Errorf(EInvalidNumber, "phone number is empty")
	}
	if len(s) > 64 {
		return "", Errorf(EInvalidNumber, "phone number is too long")
	}
	// International prefix "00" works from every region for our users, even when
	// the configured region dials abroad differently.
	if digits := strings.TrimLeft(s, " "); strings.HasPrefix(digits, "00") {
		s = "+" + digits[2:]
	}
	num, err := phonenumbers.Parse(s, strings.ToUpper(region))
	if err != nil {
		return "", Errorf(EInvalidNumber, "%q is not a phone number: %v", raw, err)
	}
	if !phonenumbers.IsValidNumber(num) {
		return "", Errorf(EInvalidNumber, "%q is not a valid phone number", raw)
	}
	return MSISDN(phonenumbers.Format(num, phonenumbers.E164)), nil
}

// DefaultRegion is the region national-format numbers are read in unless
// configured (phone.default_region).
const DefaultRegion = "CN"

// RegionOf returns the ISO region of a normalised number ("CN"), or "" when
// it has none.
func RegionOf(m MSISDN) string {
	num, err := phonenumbers.Parse(string(m), "")
	if err != nil {
		return ""
	}
	return phonenumbers.GetRegionCodeForNumber(num)
}

// CountryCode returns the calling code of a normalised number (86), or 0.
func CountryCode(m MSISDN) int {
	num, err := phonenumbers.Parse(string(m), "")
	if err != nil {
		return 0
	}
	return int(num.GetCountryCode())
}

// Identity is what a handset presents besides its number: device id (IMEI)
// and SIM id (ICCID or IMSI). Two identities match when both ids are equal.
type Identity struct {
	DeviceID string `json:"device_id"`
	SIMID    string `json:"sim_id"`
}

// Validate checks that both ids are present and of sane length and alphabet.
func (id Identity) Validate() error {
	if err := validID("device_id", id.DeviceID); err != nil {
		return err
	}
	return validID("sim_id", id.SIMID)
}

func validID(field, v string) error {
	if v == "" {
		return Errorf(EInvalid, "%s is required", field)
	}
	if len(v) > 64 {
		return Errorf(EInvalid, "%s is longer than 64 characters", field)
	}
	for _, r := range v {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r == '-' || r == '_' || r == ':' || r == '.') {
			return Errorf(EInvalid, "%s may hold only letters, digits and - _ : .", field)
		}
	}
	return nil
}
