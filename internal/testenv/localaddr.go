package testenv

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host-local test addresses. They sit on lo, so only this machine answers
// them: a server listening on one is reachable from the test, from test
// hosts' namespaces through their veth, and from containers on a bridge
// (their packets arrive on the bridge for a local address: no forwarding
// is involved, so ip_forward may stay 0).
var (
	localAddr4Net = netip.MustParsePrefix("198.19.254.0/24")
	localAddr6Net = netip.MustParsePrefix("fdc5:51c3:7e57::/64")
)

// LocalAddr adds an unused address out of 198.19.254.0/24 to lo as a /32,
// checks that the kernel routes it locally, and removes it at cleanup. A
// server listening on it is reachable from containers on a bridge network,
// which 127.0.0.1 is not (that is the container's own loopback).
func LocalAddr(t testing.TB) netip.Addr {
	t.Helper()
	return localAddr(t, localAddr4Net)
}

// LocalAddr6 is LocalAddr for IPv6: a /128 out of fdc5:51c3:7e57::/64.
func LocalAddr6(t testing.TB) netip.Addr {
	t.Helper()
	return localAddr(t, localAddr6Net)
}

func localAddr(t testing.TB, within netip.Prefix) netip.Addr {
	t.Helper()
	RequireRoot(t)
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatalf("find lo: %v", err)
	}
	for attempt := 0; attempt < 20; attempt++ {
		a := randHost(within)
		// An address already local (another test's alias) or routed
		// somewhere (a test bridge) is not ours to take.
		if claimed(netip.PrefixFrom(a, a.BitLen())) {
			continue
		}
		addr := &netlink.Addr{IPNet: ipnet(a, a.BitLen())}
		if a.Is6() {
			// lo does no duplicate address detection, but say so: the
			// address must be usable at once.
			addr.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrAdd(lo, addr); err != nil {
			if err == unix.EEXIST {
				continue
			}
			t.Fatalf("add %s to lo: %v", a, err)
		}
		t.Cleanup(func() {
			if err := netlink.AddrDel(lo, addr); err != nil {
				t.Errorf("remove %s from lo: %v", a, err)
			}
		})
		// The kernel installs an IPv6 address's local route from a work
		// queue, a moment after the address appears.
		WaitFor(t, 5*time.Second, a.String()+" on lo to route locally", func() bool { return IsLocal(a) })
		return a
	}
	t.Fatalf("no unused address in %s after 20 attempts", within)
	return netip.Addr{}
}

// IsLocal reports whether the kernel delivers packets for a to this
// machine (a route of type local, as `ip route get` prints "local ...").
// Check it before connecting to an address a test put on lo: a missing
// alias would otherwise send the connection out of the default route.
func IsLocal(a netip.Addr) bool {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return false
	}
	return routes[0].Type == unix.RTN_LOCAL
}

// claimed reports whether p overlaps an address or a route of this
// machine other than the default route: a local address (another test's
// alias), a connected network (a bridge, a veth, eth0) or a route to one.
func claimed(p netip.Prefix) bool {
	if IsLocal(p.Addr()) {
		return true
	}
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return true
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		ra, ok := netip.AddrFromSlice(r.Dst.IP)
		if !ok || ones == 0 {
			continue
		}
		rp := netip.PrefixFrom(ra.Unmap(), ones)
		if rp.Overlaps(p) {
			return true
		}
	}
	return false
}

// randSubnet returns a random prefix of length bits inside p.
func randSubnet(p netip.Prefix, bits int) netip.Prefix {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < bits; i++ {
		if randUint16()&1 == 1 {
			b[i/8] |= 0x80 >> (i % 8)
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.PrefixFrom(a, bits)
}

// randHost returns a random address inside p, neither its first nor its
// last address.
func randHost(p netip.Prefix) netip.Addr {
	for {
		a := randSubnet(p, p.Addr().BitLen()).Addr()
		last := a.Next()
		if a != p.Masked().Addr() && last.IsValid() && p.Contains(last) {
			return a
		}
	}
}
