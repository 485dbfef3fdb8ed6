package main

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
)

// TestStatusUnhooked: a wanted cgroup the daemon could not hook is a
// WARNING line near the top of status, saying it is NOT protected and why;
// the counters say what they count.
func TestStatusUnhooked(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := &api.Status{PID: 42, Started: time.Now(), ProxyPort: 15001,
		Cgroups:  []api.Cgroup{{Path: "system.slice/gh.service", ID: 7, Source: "config"}},
		Unhooked: []api.Unhooked{{Path: "system.slice/gl.service", Source: "config", Reason: "the cgroup does not exist", Since: since}},
		Flows:    api.Flows{Total: 6}}
	pins := &interceptor.PinStatus{Dir: "/sys/fs/bpf/sluice/default", Stats: map[string]uint64{"redirect": 8}}
	var out bytes.Buffer
	printStatus(&out, st, "", pins, "default")
	lines := strings.Split(out.String(), "\n")
	want := "WARNING:     cgroup system.slice/gl.service (config) is NOT protected: the cgroup does not exist (since " + since.Local().Format(time.RFC3339) + ")"
	if len(lines) < 2 || lines[1] != want {
		t.Errorf("second line %q, want %q\n%s", lines[1], want, out.String())
	}
	for _, w := range []string{
		"flows seen:  6 served (0 active), 0 denied by the ruleset, 0 refused, 0 past max_sessions; 0 not redirected, closed (connections this daemon accepted since it started)\n",
		"kernel:      redirect=8 (connects the hooks handled since the pins were created, across daemon restarts: redirected = served + denied + refused + past max_sessions, plus connects made while no daemon was running)\n",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("status lacks %q:\n%s", w, out.String())
		}
	}
}

// TestDoctorHooked: doctor FAILs naming each unhooked cgroup, with the fix.
func TestDoctorHooked(t *testing.T) {
	st := &api.Status{Cgroups: []api.Cgroup{{Path: "a.service"}}}
	if f := checkHooked(st, "/etc/sluice/sluiced.hcl"); f.level != levelOK || !strings.Contains(f.detail, "a.service") {
		t.Errorf("all hooked: %+v", f)
	}
	st.Unhooked = []api.Unhooked{
		{Path: "b.service", Source: "config", Reason: "the cgroup does not exist"},
		{Path: "c.service", Source: "discovered", Reason: "sluiced refuses to hook it: below the daemon's own cgroup"},
	}
	f := checkHooked(st, "/etc/sluice/sluiced.hcl")
	if f.level != levelFail || !strings.Contains(f.detail, "NOT protected") || !strings.Contains(f.detail, "b.service (config") ||
		!strings.Contains(f.detail, "c.service (discovered") || !strings.Contains(f.detail, "does not exist") {
		t.Errorf("unhooked: %+v", f)
	}
	for _, w := range []string{"start the runner service", "cgroups in /etc/sluice/sluiced.hcl", "discover"} {
		if !strings.Contains(f.fix, w) {
			t.Errorf("fix %q lacks %q", f.fix, w)
		}
	}
	if f := checkHooked(&api.Status{}, "x"); f.level != levelWarn || !strings.Contains(f.fix, "sluice install") {
		t.Errorf("nothing hooked: %+v", f)
	}
}

// TestUnreachableError: what the client says for each way the daemon
// cannot be reached.
func TestUnreachableError(t *testing.T) {
	for _, tt := range []struct {
		err    *api.UnreachableError
		want   string
		errsIs error
	}{
		{&api.UnreachableError{Addr: "/run/s.sock", Err: syscall.ECONNREFUSED},
			`the daemon is not running (nothing listens on /run/s.sock): start it with "systemctl start sluiced", or pass --socket PATH if it uses another socket`, syscall.ECONNREFUSED},
		{&api.UnreachableError{Addr: "/run/s.sock", Err: syscall.ENOENT},
			`the daemon is not running (nothing listens on /run/s.sock)`, syscall.ENOENT},
		{&api.UnreachableError{Addr: "/run/s.sock", Err: syscall.EACCES},
			"permission denied on the daemon's socket /run/s.sock: run as root", syscall.EACCES},
		{&api.UnreachableError{Addr: "https://h:9443", Remote: true, Err: syscall.ECONNREFUSED},
			"cannot reach the daemon's remote API at https://h:9443: connection refused: check --server", syscall.ECONNREFUSED},
	} {
		if got := tt.err.Error(); !strings.Contains(got, tt.want) {
			t.Errorf("%v: %q, want %q", tt.err.Err, got, tt.want)
		}
		if !errors.Is(tt.err, tt.errsIs) {
			t.Errorf("%v: errors.Is the cause is false", tt.err.Err)
		}
	}
}

// TestStatusTargets: each target that is not decoded says what its flows
// get and why.
func TestStatusTargets(t *testing.T) {
	st := &api.Status{PID: 42, Started: time.Now(), Targets: []api.Target{
		{Name: "pg", Protocol: "postgres", Addresses: []string{"*:5432"}, Decoded: true, Mode: "decoded"},
		{Name: "ssh", Protocol: "ssh", Addresses: []string{"*:22"}, Mode: "relayed opaquely (undecoded)", Why: "the target has no credential for Sluice to log in to the host with"},
		{Name: "kube", Protocol: "k8s", Addresses: []string{"*:6443"}, Mode: "refused undecoded", Why: "this build has no k8s decoder"},
		{Name: "raw", Protocol: "tcp", Addresses: []string{"*:9000"}, Mode: "relayed opaquely"},
	}}
	var out bytes.Buffer
	printStatus(&out, st, "", nil, "default")
	for _, w := range []string{
		"target:      pg (postgres) *:5432\n",
		"target:      ssh (ssh) *:22  [relayed opaquely (undecoded): the target has no credential for Sluice to log in to the host with]\n",
		"target:      kube (k8s) *:6443  [refused undecoded: this build has no k8s decoder]\n",
		"target:      raw (tcp) *:9000  [relayed opaquely]\n",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("status lacks %q:\n%s", w, out.String())
		}
	}
}
