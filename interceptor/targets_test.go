package interceptor

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/bpf"
	"github.com/sluicehq/sluice/ruleset"
)

func addrs(t *testing.T, ss ...string) []ruleset.Address {
	t.Helper()
	var out []ruleset.Address
	for _, s := range ss {
		a, err := ruleset.ParseAddress(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ips, ok := f[host]; ok {
		return ips, nil
	}
	return nil, &netErr{host}
}

type netErr struct{ host string }

func (e *netErr) Error() string { return "no such host " + e.host }

func TestCompileTargets(t *testing.T) {
	old := Resolver
	Resolver = fakeResolver{"db.internal": {netip.MustParseAddr("10.9.8.7"), netip.MustParseAddr("2001:db8::7")}}
	defer func() { Resolver = old }()

	tt, err := compileTargets([]*Target{
		{Name: "a", Protocol: "tcp", Addresses: addrs(t, "10.0.0.5:5432", "10.1.0.0/16:6000-6002")},
		{Name: "b", Protocol: "tcp", Addresses: addrs(t, "[2001:db8::/32]:22", "*:6443", "db.internal:3306", "gone.example:1")},
	}, nil, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	want := map[bpf.TargetKey]uint32{
		targetKey(netip.MustParsePrefix("10.0.0.5/32"), 5432):     1,
		targetKey(netip.MustParsePrefix("10.1.0.0/16"), 6000):     1,
		targetKey(netip.MustParsePrefix("10.1.0.0/16"), 6001):     1,
		targetKey(netip.MustParsePrefix("10.1.0.0/16"), 6002):     1,
		targetKey(netip.MustParsePrefix("2001:db8::/32"), 22):     2,
		targetKey(netip.MustParsePrefix("::/0"), 6443):            2,
		targetKey(netip.MustParsePrefix("10.9.8.7/32"), 3306):     2,
		targetKey(netip.MustParsePrefix("2001:db8::7/128"), 3306): 2,
	}
	if len(tt.entries) != len(want) {
		t.Errorf("got %d entries, want %d: %v", len(tt.entries), len(want), tt.entries)
	}
	for k, id := range want {
		if v, ok := tt.entries[k]; !ok || v.Id != id {
			t.Errorf("entry %+v = %+v (present %v), want id %d", k, v, ok, id)
		}
	}
	// IPv4 is stored as ::ffff:a.b.c.d with the prefix shifted by 96.
	k := targetKey(netip.MustParsePrefix("10.1.0.0/16"), 6000)
	if k.Prefixlen != 32+96+16 || k.Addr[10] != 0xff || k.Addr[11] != 0xff || k.Addr[12] != 10 {
		t.Errorf("IPv4 key = %+v", k)
	}
}

func TestCompileTargetsConflict(t *testing.T) {
	_, err := compileTargets([]*Target{
		{Name: "a", Addresses: addrs(t, "10.0.0.5:5432")},
		{Name: "b", Addresses: addrs(t, "10.0.0.5:5430-5435")},
	}, nil, func(string, ...any) {})
	if err == nil || !strings.Contains(err.Error(), `target "a" and target "b"`) {
		t.Fatalf("overlapping targets: err = %v, want a conflict naming both", err)
	}
}

func TestCompileTargetsKeepsLastResolution(t *testing.T) {
	old := Resolver
	Resolver = fakeResolver{}
	defer func() { Resolver = old }()
	prev := map[string][]netip.Addr{"db.internal": {netip.MustParseAddr("10.9.8.7")}}
	var warned bool
	tt, err := compileTargets([]*Target{{Name: "a", Addresses: addrs(t, "db.internal:5432")}}, prev,
		func(string, ...any) { warned = true })
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tt.entries[targetKey(netip.MustParsePrefix("10.9.8.7/32"), 5432)]; !ok || !warned {
		t.Errorf("failed lookup: entries %v warned %v; want the last addresses kept and a warning", tt.entries, warned)
	}
}

func TestCgroupPath(t *testing.T) {
	for _, rel := range []string{"", "/", "//", "/../.."} {
		if _, err := CgroupPath("/sys/fs/cgroup", rel); err == nil {
			t.Errorf("CgroupPath(%q) accepted the root cgroup", rel)
		}
	}
	if p, err := CgroupPath("/sys/fs/cgroup/unified", "runner/../job"); err != nil || p != "/sys/fs/cgroup/unified/job" {
		t.Errorf("CgroupPath = %q, %v", p, err)
	}
	cases := []struct {
		a, b string
		want bool
	}{
		{"/runner", "runner", true},
		{"/runner/job1", "/runner", true},
		{"/runner2", "/runner", false},
		{"/", "/runner", false},
	}
	for _, c := range cases {
		if got := within(c.a, c.b); got != c.want {
			t.Errorf("within(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
