package interceptor

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sluicehq/sluice/bpf"
)

// Container addresses.
//
// The proxy listens on 127.0.0.1 and ::1 of the daemon's network namespace.
// A connect made in any other namespace (a container's) would reach that
// namespace's own loopback instead, so the hooks send it to a container
// address: an address on this host's loopback device, which a container
// reaches through its default route (its bridge's gateway is this host).
// The kernel delivers such packets locally with ip_forward off. The
// addresses must really be local: were one missing, a redirected connect
// would follow the default route off the machine. So the daemon adds them
// itself, checks the kernel routes them locally before it listens on them
// or tells the hooks, and the hooks refuse a container's connect to a
// target when no checked address is set.

// DefaultContainerAddr4 and DefaultContainerAddr6 are the container
// addresses when the configuration names none: link-local IPv4 (never
// routed beyond a link) and a unique local IPv6 address.
var (
	DefaultContainerAddr4 = netip.MustParseAddr("169.254.73.1")
	DefaultContainerAddr6 = netip.MustParseAddr("fdc5:51c3:73::1")
)

// ErrNotLocal is returned when an address the hooks would send connects to
// is not delivered locally by the kernel.
var ErrNotLocal = errors.New("address is not local to this host")

// AddLocalAddr puts a on the loopback device (as a /32 or /128) unless it
// is there, and then checks that the kernel routes it locally.
func AddLocalAddr(a netip.Addr) error {
	if !a.IsValid() {
		return nil
	}
	if a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
		return fmt.Errorf("container address %s: must be a unicast address outside loopback, which a container's namespace has of its own", a)
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("container address %s: find the loopback device: %w", a, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(lo, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("container address %s: add it to lo: %w", a, err)
	}
	// The kernel installs an IPv6 address's local route from a work queue
	// (even without duplicate address detection): wait for it, briefly.
	deadline := time.Now().Add(3 * time.Second)
	for {
		err := CheckLocal(a)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RemoveLocalAddr takes a off the loopback device, if it is there.
func RemoveLocalAddr(a netip.Addr) error {
	if !a.IsValid() {
		return nil
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if err := netlink.AddrDel(lo, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove %s from lo: %w", a, err)
	}
	return nil
}

// CheckLocal returns nil when the kernel delivers packets to a on this host.
func CheckLocal(a netip.Addr) error {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil {
		return fmt.Errorf("container address %s: route lookup: %w", a, err)
	}
	for _, r := range routes {
		if r.Type == unix.RTN_LOCAL {
			return nil
		}
	}
	return fmt.Errorf("container address %s: %w: the kernel would route it off the host", a, ErrNotLocal)
}

// netnsCookie returns the cookie of the calling thread's network namespace
// (SO_NETNS_COOKIE, Linux 5.14), the value bpf_get_netns_cookie gives the
// hooks for sockets made there.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("SO_NETNS_COOKIE: %w", err)
	}
	return v, nil
}

// writeNetCfg tells the hooks the daemon's network namespace and the
// container addresses. An address is written only after CheckLocal passed;
// without one, connects to a target from other namespaces are refused.
func (ic *Interceptor) writeNetCfg(a4, a6 netip.Addr) error {
	cookie, err := netnsCookie()
	if err != nil {
		return fmt.Errorf("read the daemon's network namespace cookie: %w", err)
	}
	nc := bpf.NetCfg{HostNetns: cookie}
	if ic.cfg.Scope != "" {
		nc.Flags |= bpf.NetCfgScoped
	}
	if a := a4; a.IsValid() {
		if !a.Is4() {
			return fmt.Errorf("container address %s is not IPv4", a)
		}
		if err := CheckLocal(a); err != nil {
			return err
		}
		b := a.As4()
		nc.Addr4 = uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24 // network order in memory
	}
	if a := a6; a.IsValid() {
		if !a.Is6() || a.Is4In6() {
			return fmt.Errorf("container address %s is not IPv6", a)
		}
		if err := CheckLocal(a); err != nil {
			return err
		}
		nc.Addr6 = a.As16()
	}
	if err := ic.objs.NetCfg.Put(uint32(0), &nc); err != nil {
		return fmt.Errorf("write netcfg map: %w", err)
	}
	return nil
}

// CheckContainerAddrs re-checks that the container addresses are still
// local. One that is not is re-added; if that fails it is withdrawn from
// the hooks, so that containers' connects to targets are refused rather
// than routed off the host. It returns what it found wrong.
func (ic *Interceptor) CheckContainerAddrs() error {
	var errs []error
	for _, a := range []netip.Addr{ic.cfg.ContainerAddr4, ic.cfg.ContainerAddr6} {
		if !a.IsValid() || CheckLocal(a) == nil {
			continue
		}
		err := fmt.Errorf("container address %s was no longer local", a)
		if aerr := AddLocalAddr(a); aerr != nil {
			errs = append(errs, fmt.Errorf("%w and could not be restored: %v", err, aerr))
			continue
		}
		errs = append(errs, fmt.Errorf("%w: added it to lo again", err))
	}
	if len(errs) == 0 {
		return nil
	}
	// Write only the addresses that are local now.
	a4, a6 := ic.cfg.ContainerAddr4, ic.cfg.ContainerAddr6
	if a4.IsValid() && CheckLocal(a4) != nil {
		a4 = netip.Addr{}
	}
	if a6.IsValid() && CheckLocal(a6) != nil {
		a6 = netip.Addr{}
	}
	if err := ic.writeNetCfg(a4, a6); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
