package phonebook

import "net/netip"

// Default prefix lengths of AddrPrefixes: an IPv4 address is one client;
// an IPv6 subscriber usually gets a whole /64 and can rotate through it.
const (
	DefaultIPv4Prefix = 32
	DefaultIPv6Prefix = 64
)

// AddrPrefixes says how client addresses are grouped for per-address
// limits (HTTP, relay TCP before Auth, relay UDP): every address in one
// IPv4 /V4 or one IPv6 /V6 shares one budget. Zero values mean the
// defaults (/32 and /64).
type AddrPrefixes struct {
	V4 int
	V6 int
}

// Key returns the network a limit counts addr against: addr masked to the
// configured prefix (IPv4-mapped IPv6 addresses count as IPv4). The zero
// Addr (no address) stays the zero Prefix.
func (p AddrPrefixes) Key(addr netip.Addr) netip.Prefix {
	addr = addr.Unmap().WithZone("")
	if !addr.IsValid() {
		return netip.Prefix{}
	}
	bits := p.V6
	if bits <= 0 || bits > 128 {
		bits = DefaultIPv6Prefix
	}
	if addr.Is4() {
		bits = p.V4
		if bits <= 0 || bits > 32 {
			bits = DefaultIPv4Prefix
		}
	}
	pfx, _ := addr.Prefix(bits)
	return pfx
}

// KeyString is Key as text, for counter names: "203.0.113.7/32",
// "2001:db8:1:2::/64".
func (p AddrPrefixes) KeyString(addr netip.Addr) string {
	k := p.Key(addr)
	if !k.IsValid() {
		return "none"
	}
	return k.String()
}

// WithDefaults fills in the zero prefix lengths.
func (p AddrPrefixes) WithDefaults() AddrPrefixes {
	if p.V4 <= 0 {
		p.V4 = DefaultIPv4Prefix
	}
	if p.V6 <= 0 {
		p.V6 = DefaultIPv6Prefix
	}
	return p
}
