package interceptor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/sluicehq/sluice/bpf"
	"github.com/sluicehq/sluice/ruleset"
)

// Target is a destination the kernel sends to the proxy: a ruleset's
// target block. Targets are shared, read-only values.
type Target = ruleset.Target

// targetTable is the kernel map's contents as the daemon last wrote them.
type targetTable struct {
	byID    []*Target // index = target id - 1
	entries map[bpf.TargetKey]bpf.TargetVal
	hosts   map[string][]netip.Addr // last good resolution of each hostname
}

// Resolver looks up hostnames of targets. Default net.DefaultResolver.
var Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
} = net.DefaultResolver

// SyncTargets makes the kernel's target map hold exactly targets. Hostnames
// are resolved now; a name that fails to resolve keeps its last good
// addresses, and one never resolved is skipped with a warning. Two targets
// claiming the same address and port is an error, and the map is then left
// as it was.
func (ic *Interceptor) SyncTargets(targets []*Target) error {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	var prevHosts map[string][]netip.Addr
	if ic.targets != nil {
		prevHosts = ic.targets.hosts
	}
	tt, err := compileTargets(targets, prevHosts, ic.log.Warn)
	if err != nil {
		return err
	}
	// Write the new entries before removing stale ones so that a
	// destination present in both versions is never briefly unhooked.
	for k, v := range tt.entries {
		if err := ic.objs.Targets.Put(k, v); err != nil {
			return fmt.Errorf("write target map: %w", err)
		}
	}
	var stale []bpf.TargetKey
	var k bpf.TargetKey
	var v bpf.TargetVal
	it := ic.objs.Targets.Iterate()
	for it.Next(&k, &v) {
		if _, ok := tt.entries[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read target map: %w", err)
	}
	for _, k := range stale {
		if err := ic.objs.Targets.Delete(k); err != nil {
			return fmt.Errorf("delete stale target entry: %w", err)
		}
	}
	ic.targets = tt
	ic.log.Info("targets synced", "targets", len(targets), "entries", len(tt.entries), "removed", len(stale))
	return nil
}

func compileTargets(targets []*Target, prevHosts map[string][]netip.Addr, warn func(string, ...any)) (*targetTable, error) {
	tt := &targetTable{entries: map[bpf.TargetKey]bpf.TargetVal{}, hosts: map[string][]netip.Addr{}}
	owner := map[bpf.TargetKey]string{}
	for i, t := range targets {
		id := uint32(i + 1)
		tt.byID = append(tt.byID, t)
		for _, a := range t.Addresses {
			var prefixes []netip.Prefix
			switch {
			case a.Any:
				prefixes = []netip.Prefix{netip.PrefixFrom(netip.IPv6Unspecified(), 0)}
			case a.Host != "":
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				ips, err := Resolver.LookupNetIP(ctx, "ip", a.Host)
				cancel()
				if err != nil || len(ips) == 0 {
					if old, ok := prevHosts[a.Host]; ok {
						warn("hostname did not resolve; keeping its last addresses", "target", t.Name, "host", a.Host, "error", err)
						ips = old
					} else {
						warn("hostname did not resolve; it is not intercepted until it does", "target", t.Name, "host", a.Host, "error", err)
						continue
					}
				}
				tt.hosts[a.Host] = ips
				for _, ip := range ips {
					ip = ip.Unmap()
					prefixes = append(prefixes, netip.PrefixFrom(ip, ip.BitLen()))
				}
			default:
				prefixes = []netip.Prefix{a.Prefix}
			}
			for _, p := range prefixes {
				for port := uint32(a.PortLo); port <= uint32(a.PortHi); port++ {
					k := targetKey(p, uint16(port))
					if prev, ok := owner[k]; ok && prev != t.Name {
						return nil, fmt.Errorf("sync targets: %s port %d is in both target %q and target %q", p, port, prev, t.Name)
					}
					owner[k] = t.Name
					tt.entries[k] = bpf.TargetVal{Id: id}
				}
			}
		}
	}
	if len(tt.entries) > 16384 {
		return nil, errors.New("sync targets: more than 16384 address/port entries; use CIDRs or narrower port ranges")
	}
	return tt, nil
}

// targetKey builds the LPM key for a prefix and port. IPv4 is stored as
// ::ffff:a.b.c.d, so an IPv4 /n becomes a /(96+n).
func targetKey(p netip.Prefix, port uint16) bpf.TargetKey {
	addr := p.Addr()
	bits := p.Bits()
	if addr.Is4() {
		bits += 96
	}
	return bpf.TargetKey{
		Prefixlen: uint32(bpf.TargetPrefixBase + bits),
		Port:      port,
		Addr:      addr.As16(),
	}
}

// TargetByID returns the target the kernel matched, by the id it stored.
// The id is only an index into the last synced list, so the target is
// checked against the destination: an origin recorded just before a reload
// must not be served under another target's rules.
func (ic *Interceptor) TargetByID(id uint32, dst netip.AddrPort) (*Target, bool) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.targets == nil || id == 0 || int(id) > len(ic.targets.byID) {
		return nil, false
	}
	t := ic.targets.byID[id-1]
	if !ic.targets.covers(t, dst) {
		return nil, false
	}
	return t, true
}

// covers reports whether t, as last resolved, includes dst.
func (tt *targetTable) covers(t *Target, dst netip.AddrPort) bool {
	for _, a := range t.Addresses {
		if dst.Port() < a.PortLo || dst.Port() > a.PortHi {
			continue
		}
		switch {
		case a.Any:
			return true
		case a.Host != "":
			for _, ip := range tt.hosts[a.Host] {
				if ip.Unmap() == dst.Addr().Unmap() {
					return true
				}
			}
		default:
			if a.Prefix.Contains(dst.Addr().Unmap()) {
				return true
			}
		}
	}
	return false
}
