package testenv

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Host is a test host in a network namespace of its own, joined to the
// test's namespace by a veth pair. Addresses come from 198.18.0.0/15
// (RFC 2544 benchmarking space): the host has Addr, the test's side Gateway.
type Host struct {
	Netns   string // name under /run/netns, usable with `ip netns exec`
	Addr    netip.Addr
	Gateway netip.Addr
}

var hostSeq atomic.Uint32

// NewHost creates a network namespace with a veth pair to the test's own
// namespace and removes both at cleanup. Traffic to Host.Addr stays on this
// machine.
func NewHost(t testing.TB) *Host {
	t.Helper()
	RequireRoot(t)
	// Each host gets a /30 out of 198.18.0.0/15; randomise the start so
	// concurrent test binaries rarely collide.
	n := (uint32(randUint16())%8000 + hostSeq.Add(1)) % 32000
	base := netip.AddrFrom4([4]byte{198, 18 + byte(n>>14), byte(n >> 6), byte(n<<2) & 0xfc})
	gw := base.Next()
	addr := gw.Next()
	name := RandName("sluice-h")
	h := &Host{Netns: name, Addr: addr, Gateway: gw}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatalf("get own netns: %v", err)
	}
	defer orig.Close()

	// NewNamed creates the namespace and switches this thread into it.
	ns, err := netns.NewNamed(name)
	if err != nil {
		netns.Set(orig)
		t.Fatalf("create netns %s: %v", name, err)
	}
	defer ns.Close()
	if err := netns.Set(orig); err != nil {
		t.Fatalf("return to own netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})

	hostSide := name[len(name)-8:]
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "sl" + hostSide + "a"}, PeerName: "sl" + hostSide + "b"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(veth.Name); err == nil {
			netlink.LinkDel(l)
		}
	})
	local, err := netlink.LinkByName(veth.Name)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := netlink.LinkByName(veth.PeerName)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetNsFd(peer, int(ns)); err != nil {
		t.Fatalf("move veth into netns: %v", err)
	}
	if err := netlink.AddrAdd(local, &netlink.Addr{IPNet: ipnet(gw, 30)}); err != nil {
		t.Fatalf("address own veth: %v", err)
	}
	if err := netlink.LinkSetUp(local); err != nil {
		t.Fatal(err)
	}

	nh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle in netns: %v", err)
	}
	defer nh.Close()
	inner, err := nh.LinkByName(veth.PeerName)
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.AddrAdd(inner, &netlink.Addr{IPNet: ipnet(addr, 30)}); err != nil {
		t.Fatalf("address veth in netns: %v", err)
	}
	if err := nh.LinkSetUp(inner); err != nil {
		t.Fatal(err)
	}
	lo, err := nh.LinkByName("lo")
	if err == nil {
		nh.LinkSetUp(lo)
	}
	return h
}

func ipnet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// String names the host for messages.
func (h *Host) String() string { return fmt.Sprintf("%s (%s)", h.Netns, h.Addr) }
