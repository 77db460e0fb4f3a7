package phonebook

import (
	"net/netip"
	"testing"
)

func TestAddrPrefixesKey(t *testing.T) {
	for _, tc := range []struct {
		p    AddrPrefixes
		addr string
		want string
	}{
		{AddrPrefixes{}, "203.0.113.7", "203.0.113.7/32"},
		{AddrPrefixes{}, "::ffff:203.0.113.7", "203.0.113.7/32"},
		{AddrPrefixes{}, "2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"},
		{AddrPrefixes{}, "2001:db8:1:2::1%eth0", "2001:db8:1:2::/64"},
		{AddrPrefixes{V4: 24, V6: 48}, "203.0.113.7", "203.0.113.0/24"},
		{AddrPrefixes{V4: 24, V6: 48}, "2001:db8:1:2::1", "2001:db8:1::/48"},
		{AddrPrefixes{V4: 99, V6: 200}, "2001:db8:1:2::1", "2001:db8:1:2::/64"},
	} {
		if got := tc.p.KeyString(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("%+v.Key(%s) = %s, want %s", tc.p, tc.addr, got, tc.want)
		}
	}
	if got := (AddrPrefixes{}).KeyString(netip.Addr{}); got != "none" {
		t.Errorf("no address: %q", got)
	}
}
