package ruleset

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Address is one destination a target covers: an IP, a CIDR, every address
// ("*"), or a hostname, with a port or an inclusive port range.
//
// Exactly one of Host, Prefix or Any is set. A Host is resolved by the daemon
// into prefixes; the ruleset itself never resolves names.
type Address struct {
	Host   string       // DNS name, lower case; empty unless the address names a host
	Prefix netip.Prefix // single IP (/32 or /128) or CIDR; invalid unless the address is an IP or CIDR
	Any    bool         // "*": every IPv4 and IPv6 address
	PortLo uint16       // first port, never 0
	PortHi uint16       // last port, PortHi >= PortLo
}

// MaxPortRange bounds how many ports one address may cover. Each port is
// one entry in the kernel's target map, so very wide ranges are refused
// rather than silently truncated.
const MaxPortRange = 1024

// ParseAddress parses a target address. Accepted forms:
//
//	10.0.0.5:5432          one IPv4 address
//	10.0.0.0/8:5432        an IPv4 CIDR
//	[2001:db8::5]:5432     one IPv6 address
//	[2001:db8::/32]:5432   an IPv6 CIDR
//	db.internal:5432       a hostname, resolved by the daemon
//	*:5432                 every address
//	10.0.0.5:5432-5439     any form above with an inclusive port range
//
// IPv4-mapped IPv6 addresses are normalised to IPv4.
func ParseAddress(s string) (Address, error) {
	var a Address
	s = strings.TrimSpace(s)
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return a, fmt.Errorf("address %q has no port: write it as host:port, for example %q", s, s+":5432")
	}
	host, ports := s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") {
		if !strings.HasSuffix(host, "]") {
			return a, fmt.Errorf("address %q: missing ']' after the IPv6 address", s)
		}
		host = host[1 : len(host)-1]
		if !strings.Contains(host, ":") {
			return a, fmt.Errorf("address %q: brackets are only for IPv6 addresses", s)
		}
	} else if strings.Contains(host, ":") {
		return a, fmt.Errorf("address %q: put an IPv6 address in brackets, as in [2001:db8::5]:5432", s)
	}
	lo, hi, err := parsePorts(ports)
	if err != nil {
		return a, fmt.Errorf("address %q: %w", s, err)
	}
	a.PortLo, a.PortHi = lo, hi

	switch {
	case host == "*":
		a.Any = true
	case host == "":
		return a, fmt.Errorf("address %q has no host: use * for every address", s)
	case strings.Contains(host, "/"):
		p, err := netip.ParsePrefix(host)
		if err != nil {
			return a, fmt.Errorf("address %q: invalid CIDR: %w", s, err)
		}
		if p.Masked() != p {
			return a, fmt.Errorf("address %q: CIDR has host bits set; did you mean %s?", s, p.Masked())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		a.Prefix = p
	default:
		if ip, err := netip.ParseAddr(host); err == nil {
			if ip.Zone() != "" {
				return a, fmt.Errorf("address %q: zoned IPv6 addresses are not supported", s)
			}
			ip = ip.Unmap()
			a.Prefix = netip.PrefixFrom(ip, ip.BitLen())
			break
		}
		if err := checkHostname(host); err != nil {
			return a, fmt.Errorf("address %q: %w", s, err)
		}
		a.Host = strings.ToLower(host)
	}
	return a, nil
}

func parsePorts(s string) (lo, hi uint16, err error) {
	if s == "" {
		return 0, 0, errors.New("empty port")
	}
	los, his, isRange := strings.Cut(s, "-")
	l, err := parsePort(los)
	if err != nil {
		return 0, 0, err
	}
	if !isRange {
		return l, l, nil
	}
	h, err := parsePort(his)
	if err != nil {
		return 0, 0, err
	}
	if h < l {
		return 0, 0, fmt.Errorf("port range %s runs backwards", s)
	}
	if int(h)-int(l)+1 > MaxPortRange {
		return 0, 0, fmt.Errorf("port range %s covers %d ports; at most %d are allowed", s, int(h)-int(l)+1, MaxPortRange)
	}
	return l, h, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("invalid port %q: want a number from 1 to 65535", s)
	}
	return uint16(n), nil
}

func checkHostname(h string) error {
	if len(h) > 253 {
		return errors.New("hostname longer than 253 characters")
	}
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		// An all-numeric last label is never a DNS name (RFC 3696 2); it is
		// almost always a mistyped IPv4 address such as 10.0.0.300.
		return fmt.Errorf("%q is neither an IP address nor a hostname", h)
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("invalid hostname %q", h)
		}
		for i, c := range label {
			ok := c == '-' && i > 0 && i < len(label)-1 ||
				c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
			if !ok {
				return fmt.Errorf("invalid hostname %q", h)
			}
		}
	}
	return nil
}

// String formats the address in the form ParseAddress accepts.
func (a Address) String() string {
	var host string
	switch {
	case a.Any:
		host = "*"
	case a.Host != "":
		host = a.Host
	case a.Prefix.Addr().Is6():
		if a.Prefix.IsSingleIP() {
			host = "[" + a.Prefix.Addr().String() + "]"
		} else {
			host = "[" + a.Prefix.String() + "]"
		}
	case a.Prefix.IsSingleIP():
		host = a.Prefix.Addr().String()
	default:
		host = a.Prefix.String()
	}
	if a.PortLo == a.PortHi {
		return fmt.Sprintf("%s:%d", host, a.PortLo)
	}
	return fmt.Sprintf("%s:%d-%d", host, a.PortLo, a.PortHi)
}
