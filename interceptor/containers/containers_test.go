package containers

import "testing"

// TestIDFromCgroup: the container id is read from the cgroup layouts of
// Docker's cgroupfs and systemd drivers, containerd's CRI and podman, and
// from a process in a sub-cgroup of its container; other cgroups name no
// container.
func TestIDFromCgroup(t *testing.T) {
	id := "f7875eeba5da99fa7ab3a5eb127fa7b5e4d3ba69a000ef2dd008f2cf4019b1a6"
	for _, tc := range []struct {
		path, cgroup string
	}{
		{"/sluice-containers/" + id, "/sluice-containers/" + id},
		{"/sluice.slice/sluice-containers.slice/docker-" + id + ".scope", "/sluice.slice/sluice-containers.slice/docker-" + id + ".scope"},
		{"/kubepods.slice/cri-containerd-" + id + ".scope", "/kubepods.slice/cri-containerd-" + id + ".scope"},
		{"/machine.slice/libpod-" + id + ".scope/container", "/machine.slice/libpod-" + id + ".scope"},
		{"/sluice-containers/" + id + "/init.scope", "/sluice-containers/" + id},
		{"/system.slice/actions.runner.acme.service", ""},
		{"/docker/" + id[:63], ""},
		{"/docker/" + id + "x", ""},
		{"/", ""},
	} {
		got, ok := IDFromCgroup(tc.path)
		cg, cok := CgroupOf(tc.path)
		if tc.cgroup == "" {
			if ok || cok {
				t.Errorf("%s: got id %q, cgroup %q; want none", tc.path, got, cg)
			}
			continue
		}
		if !ok || got != id || !cok || cg != tc.cgroup {
			t.Errorf("%s: got id %q (%v), cgroup %q (%v); want %s, %s", tc.path, got, ok, cg, cok, id, tc.cgroup)
		}
	}
}
