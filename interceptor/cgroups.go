package interceptor

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Where a hooked cgroup came from, as HookedCgroup.Source says it.
const (
	// SourceConfig: the daemon's configuration names the cgroup.
	SourceConfig = "config"
	// SourceDiscovered: runner discovery found the cgroup.
	SourceDiscovered = "discovered"
	// SourceScope: the configuration's scope, above the job cgroups.
	SourceScope = "scope"
	// SourcePinned: an earlier daemon hooked it, and its pinned links
	// were re-adopted; neither the configuration nor discovery names it
	// now. Only `sluice uninstall` removes such a hook.
	SourcePinned = "pinned"
)

var (
	// ErrCgroupMissing is returned by AddCgroup for a cgroup that does not
	// exist (yet): a runner service's cgroup exists only while it runs.
	ErrCgroupMissing = errors.New("cgroup does not exist")
	// ErrCovered is returned by AddCgroup for a cgroup below a hooked one:
	// its connects are already intercepted.
	ErrCovered = errors.New("cgroup is already covered by a hooked parent")
	// ErrOutsideScope is returned by AddCgroup for a job cgroup outside
	// the configured scope, where no program would see its tasks.
	ErrOutsideScope = errors.New("cgroup is outside the scope cgroup")
	// ErrContainsHooked is returned by AddCgroup for a cgroup above a
	// hooked one: the programs would run twice on the inner cgroup's
	// connects, and the second run refuses the first one's redirect.
	ErrContainsHooked = errors.New("cgroup contains a hooked cgroup")
)

// HookedCgroup is a cgroup the installation's programs are attached to.
type HookedCgroup struct {
	// Path is relative to the cgroup2 mount, without a leading slash.
	Path string `json:"path"`
	// ID is the kernel's cgroup id (the directory's inode number); the
	// links are pinned under PinDir(name)/cgroups/<ID>/.
	ID uint64 `json:"id"`
	// Source is SourceConfig, SourceDiscovered or SourcePinned.
	Source string `json:"source"`
}

// hookedCgroup holds this daemon's handles on one cgroup's pinned links.
// Closing them leaves the pins, and with them the attachments, in place.
type hookedCgroup struct {
	HookedCgroup
	links []hookLink
}

// hookLink is one pinned link and the hook (pin name) it implements.
type hookLink struct {
	pin string
	link.Link
}

// cgroupPinDir is where the links hooking cgroup id are pinned.
func cgroupPinDir(name string, id uint64) string {
	return filepath.Join(PinDir(name), "cgroups", strconv.FormatUint(id, 10))
}

// cleanRel returns a cgroup path relative to the mount without a leading
// slash: "system.slice/x.service".
func cleanRel(rel string) string {
	return strings.TrimPrefix(filepath.Clean("/"+rel), "/")
}

// checkCgroup applies the refusals that do not depend on what is hooked:
// the root cgroup, and a cgroup that holds the daemon itself. It returns
// the cgroup's absolute directory.
func checkCgroup(mount, rel string) (string, error) {
	path, err := CgroupPath(mount, rel)
	if err != nil {
		return "", err
	}
	if self, err := SelfCgroup(); err == nil && within(self, rel) {
		return "", fmt.Errorf("the daemon itself runs in %s, inside the cgroup to hook (%s); run it outside the runner's cgroup", self, rel)
	}
	return path, nil
}

// Cgroups lists the hooked cgroups, sorted by path.
func (ic *Interceptor) Cgroups() []HookedCgroup {
	ic.hookMu.Lock()
	defer ic.hookMu.Unlock()
	out := make([]HookedCgroup, 0, len(ic.hooked))
	for _, h := range ic.hooked {
		out = append(out, h.HookedCgroup)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// AddCgroup hooks the cgroup rel (relative to the cgroup2 mount) with the
// installation's programs, pinning one link per hook under
// PinDir(name)/cgroups/<id>/ so the hook outlives the daemon. It reports
// whether a new hook was made: a cgroup already hooked returns false and no
// error. The root, the daemon's own cgroup, a missing cgroup
// (ErrCgroupMissing) and a cgroup nested with a hooked one (ErrCovered,
// ErrContainsHooked) are refused. It is safe for concurrent use.
func (ic *Interceptor) AddCgroup(rel, source string) (bool, error) {
	path, err := checkCgroup(ic.mount, rel)
	if err != nil {
		return false, fmt.Errorf("hook %s: %w", rel, err)
	}
	// The id comes from the open directory, so the id checked is the
	// cgroup attached to even if the path is replaced meanwhile.
	cg, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("hook %s: %w", rel, ErrCgroupMissing)
	}
	if err != nil {
		return false, fmt.Errorf("open cgroup %s: %w", rel, err)
	}
	defer cg.Close()
	id, err := fdCgroupID(cg)
	if err != nil {
		return false, fmt.Errorf("hook %s: %w", rel, err)
	}
	clean := cleanRel(rel)

	if source != SourceScope {
		scope := cleanRel(ic.cfg.Scope)
		if ic.cfg.Scope != "" && (!within(clean, scope) || clean == scope) {
			return false, fmt.Errorf("hook %s: %w (%s)", rel, ErrOutsideScope, scope)
		}
		// Every configured or discovered cgroup is a job cgroup.
		if err := ic.addJobCgroup(clean, id); err != nil {
			return false, err
		}
		if ic.cfg.Scope != "" {
			// The scope's programs cover it.
			return false, nil
		}
	}

	ic.hookMu.Lock()
	defer ic.hookMu.Unlock()
	if h, ok := ic.hooked[id]; ok {
		if h.Source == SourcePinned && source != SourcePinned {
			h.Source = source
		}
		return false, nil
	}
	for hid, h := range ic.hooked {
		if h.Path == "" || !(within(clean, h.Path) || within(h.Path, clean)) {
			continue
		}
		// A runner service that restarted has a new cgroup at the same
		// path; the old one's pins are stale, not a parent.
		if !ic.aliveLocked(h) {
			ic.dropLocked(hid, h)
			continue
		}
		if within(clean, h.Path) {
			return false, fmt.Errorf("hook %s: %w (%s)", rel, ErrCovered, h.Path)
		}
		return false, fmt.Errorf("hook %s: %w (%s); hook the inner cgroups only", rel, ErrContainsHooked, h.Path)
	}
	h := &hookedCgroup{HookedCgroup: HookedCgroup{Path: clean, ID: id, Source: source}}
	if err := ic.attachLocked(h, cg); err != nil {
		return false, err
	}
	ic.hooked[id] = h
	return true, nil
}

// attachLocked attaches and pins every hook of h that has no link yet. On
// error the links this call made are detached and unpinned again: a
// cgroup with half its hooks would redirect connects whose origin the
// proxy cannot find.
func (ic *Interceptor) attachLocked(h *hookedCgroup, cg *os.File) error {
	dir := cgroupPinDir(ic.cfg.Name, h.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin directory: %w", err)
	}
	have := map[string]bool{}
	for _, l := range h.links {
		have[l.pin] = true
	}
	var made []hookLink
	undo := func() {
		for _, l := range made {
			l.Detach()
			l.Unpin()
			l.Close()
		}
		if len(h.links) == 0 {
			os.Remove(dir)
		}
	}
	for _, hk := range hooks {
		if have[hk.pin] {
			continue
		}
		// The link is pinned below so that it outlives this process: the
		// hook stays in place across daemon crashes and restarts.
		l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: hk.prog(ic.objs), Attach: hk.attach})
		if err != nil {
			undo()
			if errors.Is(err, ebpf.ErrNotSupported) {
				return fmt.Errorf("attach %s: no BPF link support in this kernel: %w", hk.pin, err)
			}
			return fmt.Errorf("attach %s to %s: %w", hk.pin, h.Path, err)
		}
		pin := filepath.Join(dir, hk.pin)
		if err := l.Pin(pin); err != nil {
			l.Close()
			undo()
			return fmt.Errorf("pin %s: %w", pin, err)
		}
		made = append(made, hookLink{hk.pin, l})
	}
	h.links = append(h.links, made...)
	ic.log.Info("hooked cgroup", "cgroup", h.Path, "cgroup_id", h.ID, "source", h.Source, "pins", dir)
	return nil
}

// adopt takes over what an earlier daemon pinned. Links of the
// single-cgroup layout (PinDir/link_*) move to PinDir/cgroups/<id>/; every
// per-cgroup link is switched to this daemon's programs with an atomic
// link update, so the hook never goes empty. The pins of a cgroup that no
// longer exists are removed.
func (ic *Interceptor) adopt() error {
	dir := PinDir(ic.cfg.Name)
	for _, hk := range hooks {
		old := filepath.Join(dir, hk.pin)
		l, err := link.LoadPinnedLink(old, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("load pinned link %s: %w", old, err)
		}
		id, ok := linkCgroupID(l)
		if !ok {
			l.Close()
			return fmt.Errorf("read pinned link %s: no cgroup information", old)
		}
		if id == 0 {
			l.Unpin()
			l.Close()
			ic.log.Info("removed a pinned link whose cgroup no longer exists", "pin", old)
			continue
		}
		nd := cgroupPinDir(ic.cfg.Name, id)
		if err := os.MkdirAll(nd, 0o700); err != nil {
			l.Close()
			return fmt.Errorf("create pin directory: %w", err)
		}
		// A rename inside bpffs moves the pin; the attachment is untouched.
		if err := os.Rename(old, filepath.Join(nd, hk.pin)); err != nil {
			l.Close()
			return fmt.Errorf("move pinned link %s: %w", old, err)
		}
		l.Close()
		ic.log.Info("moved pinned link to the per-cgroup layout", "pin", filepath.Join(nd, hk.pin), "cgroup_id", id)
	}

	ents, err := os.ReadDir(filepath.Join(dir, "cgroups"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pinned cgroups: %w", err)
	}
	ic.hookMu.Lock()
	defer ic.hookMu.Unlock()
	for _, e := range ents {
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || !e.IsDir() {
			continue
		}
		if err := ic.adoptCgroupLocked(id); err != nil {
			return err
		}
	}
	return nil
}

func (ic *Interceptor) adoptCgroupLocked(id uint64) error {
	dir := cgroupPinDir(ic.cfg.Name, id)
	h := &hookedCgroup{HookedCgroup: HookedCgroup{ID: id, Source: SourcePinned}}
	for _, hk := range hooks {
		pin := filepath.Join(dir, hk.pin)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			closeLinks(h.links)
			return fmt.Errorf("load pinned link %s: %w", pin, err)
		}
		h.links = append(h.links, hookLink{hk.pin, l})
	}
	h.Path = strings.TrimPrefix(FindCgroupByID(ic.mount, id), "/")
	if !ic.aliveLocked(h) {
		ic.dropLocked(id, h)
		return nil
	}
	for _, l := range h.links {
		// Swap in this daemon's program atomically: the hook never goes
		// empty.
		for _, hk := range hooks {
			if hk.pin != l.pin {
				continue
			}
			if err := l.Update(hk.prog(ic.objs)); err != nil {
				closeLinks(h.links)
				return fmt.Errorf("update pinned link %s: %w", filepath.Join(dir, l.pin), err)
			}
		}
	}
	ic.readopted = true
	ic.log.Info("re-adopted pinned links", "cgroup", h.Path, "cgroup_id", id, "links", len(h.links))
	if len(h.links) < len(hooks) {
		// An earlier daemon stopped half way through hooking this cgroup.
		cg, err := os.Open(filepath.Join(ic.mount, h.Path))
		if err != nil {
			closeLinks(h.links)
			return fmt.Errorf("open cgroup %s: %w", h.Path, err)
		}
		err = ic.attachLocked(h, cg)
		cg.Close()
		if err != nil {
			closeLinks(h.links)
			return err
		}
	}
	ic.hooked[id] = h
	return nil
}

// Prune removes the pins of hooked cgroups that no longer exist (a runner
// service that stopped or was removed: its cgroup died and the kernel
// detached the links with it) and returns them. Live hooks are never
// touched; only Uninstall removes those.
func (ic *Interceptor) Prune() []HookedCgroup {
	ic.pruneJobCgroups()
	ic.hookMu.Lock()
	defer ic.hookMu.Unlock()
	var gone []HookedCgroup
	for id, h := range ic.hooked {
		if !ic.aliveLocked(h) {
			gone = append(gone, h.HookedCgroup)
			ic.dropLocked(id, h)
		}
	}
	return gone
}

// aliveLocked reports whether h's cgroup still exists, updating its path
// when the cgroup was renamed.
func (ic *Interceptor) aliveLocked(h *hookedCgroup) bool {
	if len(h.links) == 0 {
		return false
	}
	if id, ok := linkCgroupID(h.links[0]); ok && id != h.ID {
		// The kernel detaches a dead cgroup's links (cgroup id 0).
		return false
	}
	if h.Path != "" {
		if id, err := CgroupID(filepath.Join(ic.mount, h.Path)); err == nil && id == h.ID {
			return true
		}
	}
	// Removed but not yet released by the kernel, or renamed.
	p := FindCgroupByID(ic.mount, h.ID)
	if p == "" {
		return false
	}
	h.Path = strings.TrimPrefix(p, "/")
	return true
}

// dropLocked unpins a dead cgroup's links and forgets it. Its cgroup holds
// no process (a cgroup with processes cannot be removed), so no connect
// loses its hook.
func (ic *Interceptor) dropLocked(id uint64, h *hookedCgroup) {
	for _, l := range h.links {
		l.Unpin()
		l.Close()
	}
	dir := cgroupPinDir(ic.cfg.Name, id)
	if ents, _ := os.ReadDir(dir); len(ents) > 0 {
		// Pins this daemon could not load: unpin them by name.
		for _, e := range ents {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	os.Remove(dir)
	delete(ic.hooked, id)
	ic.log.Info("removed the pins of a cgroup that no longer exists", "cgroup", h.Path, "cgroup_id", id)
}

// linkCgroupID returns the id of the cgroup a link is attached to, 0 once
// the kernel detached it. ok is false when the link's handle cannot say
// (a link made by AttachRawLink carries no cgroup info; one loaded from
// its pin does).
func linkCgroupID(l link.Link) (id uint64, ok bool) {
	info, err := l.Info()
	if err != nil || info.Cgroup() == nil {
		return 0, false
	}
	return info.Cgroup().CgroupId, true
}

func closeLinks(ls []hookLink) {
	for _, l := range ls {
		l.Close()
	}
}
