package interceptor

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/sluicehq/sluice/bpf"
)

// LinkStatus describes one pinned link.
type LinkStatus struct {
	Pin      string `json:"pin"`
	CgroupID uint64 `json:"cgroup_id"`
	Cgroup   string `json:"cgroup"` // relative to the cgroup2 mount; "" if not found
}

// PinStatus describes what an installation has pinned in bpffs.
type PinStatus struct {
	Name  string            `json:"name"`
	Dir   string            `json:"dir"`
	Links []LinkStatus      `json:"links"`
	Maps  []string          `json:"maps"`
	Stats map[string]uint64 `json:"stats,omitempty"`
}

// Installations lists the names that have a pin directory.
func Installations() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(BPFFSRoot, "sluice"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list installations: %w", err)
	}
	var names []string
	for _, e := range ents {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// ReadPins reports the pins of the named installation without changing
// them: the links of every hooked cgroup (PinDir/cgroups/<id>/link_*, and
// PinDir/link_* of the older single-cgroup layout) and the maps. A missing
// directory returns os.ErrNotExist.
func ReadPins(name string) (PinStatus, error) {
	dir := PinDir(name)
	st := PinStatus{Name: name, Dir: dir}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return st, err
	}
	mount, _ := Cgroup2Mount()
	paths := map[uint64]string{}
	for _, p := range linkPins(dir) {
		ls := LinkStatus{Pin: p}
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			ls.CgroupID, _ = linkCgroupID(l)
			l.Close()
		}
		if ls.CgroupID != 0 && mount != "" {
			if _, ok := paths[ls.CgroupID]; !ok {
				paths[ls.CgroupID] = FindCgroupByID(mount, ls.CgroupID)
			}
			ls.Cgroup = paths[ls.CgroupID]
		}
		st.Links = append(st.Links, ls)
	}
	for _, e := range ents {
		if e.IsDir() || isLinkPin(e.Name()) {
			continue
		}
		st.Maps = append(st.Maps, filepath.Join(dir, e.Name()))
	}
	if m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "sluice_stats"), &ebpf.LoadPinOptions{ReadOnly: true}); err == nil {
		st.Stats = map[string]uint64{}
		for i, n := range statNames() {
			var per []uint64
			if m.Lookup(uint32(i), &per) == nil {
				var sum uint64
				for _, v := range per {
					sum += v
				}
				st.Stats[n] = sum
			}
		}
		m.Close()
	}
	return st, nil
}

// linkPins lists the link pins under an installation's directory, in both
// layouts, sorted.
func linkPins(dir string) []string {
	var pins []string
	add := func(d string) {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if !e.IsDir() && isLinkPin(e.Name()) {
				pins = append(pins, filepath.Join(d, e.Name()))
			}
		}
	}
	add(dir)
	cgs, _ := os.ReadDir(filepath.Join(dir, "cgroups"))
	for _, e := range cgs {
		if e.IsDir() {
			add(filepath.Join(dir, "cgroups", e.Name()))
		}
	}
	sort.Strings(pins)
	return pins
}

func isLinkPin(name string) bool {
	for _, h := range hooks {
		if h.pin == name {
			return true
		}
	}
	return false
}

// Uninstall detaches the named installation's links from their cgroup and
// removes every pin, even while a daemon still holds the objects: this is
// the one operation that ends interception. Removing nothing is not an
// error; the returned list says what was removed.
func Uninstall(name string) ([]string, error) {
	dir := PinDir(name)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("uninstall %s: %w", name, err)
	}
	var removed []string
	var errs []error
	// The container addresses sluiced put on lo, as the hooks knew them:
	// without the hooks nothing is sent there any more.
	if m, err := ebpf.LoadPinnedMap(filepath.Join(dir, "sluice_netcfg"), nil); err == nil {
		var nc bpf.NetCfg
		if m.Lookup(uint32(0), &nc) == nil {
			var addrs []netip.Addr
			if nc.Addr4 != 0 {
				addrs = append(addrs, netip.AddrFrom4([4]byte{byte(nc.Addr4), byte(nc.Addr4 >> 8), byte(nc.Addr4 >> 16), byte(nc.Addr4 >> 24)}))
			}
			if a := netip.AddrFrom16(nc.Addr6); nc.Addr6 != [16]byte{} {
				addrs = append(addrs, a)
			}
			for _, a := range addrs {
				if CheckLocal(a) != nil {
					continue
				}
				if err := RemoveLocalAddr(a); err != nil {
					errs = append(errs, err)
				} else {
					removed = append(removed, "container address "+a.String()+" on lo")
				}
			}
		}
		m.Close()
	}
	// Links first, so nothing is redirected through half-removed maps.
	for _, p := range linkPins(dir) {
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", p, err))
			continue
		}
		// Detach ends the attachment for every holder of the link, a
		// running daemon included.
		if err := l.Detach(); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", p, err))
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		} else {
			removed = append(removed, p)
		}
		l.Close()
	}
	cgs, _ := os.ReadDir(filepath.Join(dir, "cgroups"))
	for _, e := range cgs {
		os.Remove(filepath.Join(dir, "cgroups", e.Name()))
	}
	os.Remove(filepath.Join(dir, "cgroups"))
	// The job programs' links: unpinned, they end with the last holder
	// (a running daemon's at its exit).
	tr, _ := os.ReadDir(tracingPinDir(name))
	for _, e := range tr {
		p := filepath.Join(tracingPinDir(name), e.Name())
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			l.Detach()
			l.Close()
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		} else {
			removed = append(removed, p)
		}
	}
	os.Remove(tracingPinDir(name))
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() || isLinkPin(e.Name()) {
			continue
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", p, err))
		} else {
			removed = append(removed, p)
		}
	}
	if len(errs) == 0 {
		os.Remove(dir)
		os.Remove(filepath.Dir(dir)) // only succeeds when no other installation is left
	}
	return removed, errors.Join(errs...)
}

func statNames() []string { return bpf.Names() }
