package phonebook

import "testing"

func TestNormalizeMSISDN(t *testing.T) {
	tests := []struct {
		raw, region string
		want        MSISDN
		wantErr     bool
	}{
		{"138 0013 8000", "CN", "+8613800138000", false},
		{"+86 138-0013-8000", "CN", "+8613800138000", false},
		{"008613800138000", "CN", "+8613800138000", false},
		{"0086 138 0013 8000", "US", "+8613800138000", false},
		{"tel:+8613800138000", "CN", "+8613800138000", false},
		{"(202) 555-0143", "US", "+12025550143", false},
		{"+1 202 555 0143 ext. 12", "CN", "+12025550143", false},
		{"12345", "CN", "", true},
		{"", "CN", "", true},
		{"not a number", "CN", "", true},
		{"+999 1234 5678", "CN", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := NormalizeMSISDN(tt.raw, tt.region)
			if tt.wantErr {
				if ErrorCode(err) != EInvalidNumber {
					t.Fatalf("NormalizeMSISDN(%q) = %q, %v; want invalid_number", tt.raw, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeMSISDN(%q) = %q, %v; want %q", tt.raw, got, err, tt.want)
			}
		})
	}
}
