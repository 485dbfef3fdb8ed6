package testenv_test

// These tests start a private Docker daemon: they need root (dockerd,
// cgroups, bridges, addresses on lo), the docker.io, busybox-static,
// postgresql and postgresql-client packages (scripts/install-deps.sh),
// and no network access: the image is imported from this machine's files.
// They skip under -short, and without root unless SLUICE_E2E=required.

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/sluicehq/sluice/internal/testenv"
)

// dockerLeftovers is what a private daemon and its test created on the
// host, to check that cleanup removed all of it.
type dockerLeftovers struct {
	pid          int
	dir          string
	links        []string
	addrs        []netip.Addr
	cgroupParent string
}

func TestDocker(t *testing.T) {
	testenv.RequireRoot(t)
	var left dockerLeftovers
	t.Run("psql in containers", func(t *testing.T) {
		// Containers go two levels below a test cgroup, as a runner's
		// jobs would below its service.
		parent := testenv.NewCgroup(t).Child(t, "docker/jobs")
		d := testenv.StartDocker(t, testenv.DockerOptions{CgroupParent: parent.Rel, DefaultBridge: true})
		left = dockerLeftovers{pid: d.PID, dir: d.Dir, links: []string{d.Bridge.Link}, cgroupParent: d.CgroupParent}
		image := d.PsqlImage(t)
		if again := d.PsqlImage(t); again != image {
			t.Errorf("second PsqlImage = %q, want %q", again, image)
		}
		if out, err := d.Run(t, "image", "inspect", "--format", "{{json .Config.Env}}", image); err != nil || !strings.Contains(out, "PATH=/bin:/usr/bin") {
			t.Errorf("image env: %v %s", err, out)
		}

		addr := testenv.LocalAddr(t)
		left.addrs = append(left.addrs, addr)
		pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: addr.String()})
		user := d.Network(t, testenv.NetworkOptions{})
		left.links = append(left.links, user.Link)
		t.Logf("default bridge %s %s, network %s %s %s, PostgreSQL on %s", d.Bridge.Link, d.Bridge.Subnet,
			user.Name, user.Link, user.Subnet, pg.Addr())

		for _, c := range []struct{ name, network string }{
			{"default bridge", "bridge"},
			{"user-defined network", user.Name},
			{"host network", "host"},
		} {
			t.Run(c.name, func(t *testing.T) {
				if !testenv.IsLocal(addr) {
					t.Fatalf("%s is not a local address", addr)
				}
				args := append([]string{"run", "--rm", "--network", c.network, image}, pg.PsqlArgs("", 0, "select 40+2")...)
				out, err := d.Output(t, args...)
				if err != nil || strings.TrimSpace(out) != "42" {
					t.Errorf("psql in a container on %s: %v\n%s", c.network, err, out)
				}
			})
		}

		t.Run("IPv6 network", func(t *testing.T) {
			v6 := d.Network(t, testenv.NetworkOptions{IPv6: true})
			left.links = append(left.links, v6.Link)
			addr6 := testenv.LocalAddr6(t)
			left.addrs = append(left.addrs, addr6)
			pg6 := testenv.StartPostgres(t, testenv.PostgresOptions{Host: addr6.String()})
			if !testenv.IsLocal(addr6) {
				t.Fatalf("%s is not a local address", addr6)
			}
			args := append([]string{"run", "--rm", "--network", v6.Name, image}, pg6.PsqlArgs("", 0, "select inet_client_addr()")...)
			out, err := d.Output(t, args...)
			got, perr := netip.ParseAddr(strings.TrimSpace(out))
			if err != nil || perr != nil || !v6.Subnet6.Contains(got) {
				t.Errorf("psql over IPv6 from %s (%s): %v\n%s", v6.Name, v6.Subnet6, err, out)
			}
		})

		t.Run("mariadb client", func(t *testing.T) {
			out, err := d.Run(t, "run", "--rm", "--network", "none", image, "sh", "-c", "command -v mariadb && mariadb --version")
			if err != nil {
				testenv.Need(t, !strings.Contains(out, "not found"), "no mariadb client in the image: install mariadb-client")
				t.Fatalf("mariadb --version: %v\n%s", err, out)
			}
		})

		t.Run("cgroups", func(t *testing.T) {
			// The container runs in CgroupParent/<id>; dockerd does not.
			out, err := d.Run(t, "run", "--rm", "--network", "none", "--cgroupns", "host", image, "cat", "/proc/self/cgroup")
			if err != nil || !strings.Contains(out, "0::/"+d.CgroupParent+"/") {
				t.Errorf("container cgroup, want below %s: %v\n%s", d.CgroupParent, err, out)
			}
			self, err := os.ReadFile("/proc/" + strconv.Itoa(d.PID) + "/cgroup")
			if err != nil || strings.Contains(string(self), d.CgroupParent) {
				t.Errorf("dockerd's cgroup: %v\n%s", err, self)
			}
		})

		t.Run("user", func(t *testing.T) {
			out, err := d.Run(t, "run", "--rm", "--network", "none", "--user", "nobody", image, "id")
			if err != nil || !strings.Contains(out, "uid=65534(nobody)") {
				t.Errorf("id as nobody: %v\n%s", err, out)
			}
		})

		// Left running for cleanup to remove.
		if out, err := d.Run(t, "run", "-d", "--network", user.Name, image, "sleep", "600"); err != nil {
			t.Fatalf("start a container: %v\n%s", err, out)
		}
	})
	if left.pid == 0 {
		return
	}

	t.Run("nothing left", func(t *testing.T) {
		if cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(left.pid) + "/cmdline"); err == nil && strings.Contains(string(cmdline), "dockerd") {
			t.Errorf("dockerd %d still runs", left.pid)
		}
		if _, err := os.Stat(left.dir); !os.IsNotExist(err) {
			t.Errorf("%s still there: %v", left.dir, err)
		}
		mounts, _ := os.ReadFile("/proc/self/mountinfo")
		if strings.Contains(string(mounts), left.dir) {
			t.Errorf("mounts below %s remain", left.dir)
		}
		for _, l := range left.links {
			if _, err := netlink.LinkByName(l); err == nil {
				t.Errorf("link %s remains", l)
			}
		}
		for _, a := range left.addrs {
			if testenv.IsLocal(a) {
				t.Errorf("address %s remains local", a)
			}
		}
		top := strings.SplitN(left.cgroupParent, "/", 2)[0]
		hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
		for _, h := range append(hierarchies, "/sys/fs/cgroup") {
			if _, err := os.Stat(filepath.Join(h, top)); err == nil {
				t.Errorf("cgroup %s remains", filepath.Join(h, top))
			}
		}
	})
}

// TestDockerDefaults starts a daemon with the zero DockerOptions: its
// containers go into a fresh test cgroup, and without a default bridge a
// container without --network has loopback only.
func TestDockerDefaults(t *testing.T) {
	testenv.RequireRoot(t)
	var parent string
	t.Run("daemon", func(t *testing.T) {
		d := testenv.StartDocker(t, testenv.DockerOptions{})
		parent = d.CgroupParent
		if d.Bridge != (testenv.Network{}) {
			t.Errorf("Bridge = %+v without DefaultBridge", d.Bridge)
		}
		image := d.PsqlImage(t)
		out, err := d.Output(t, "run", "--rm", "--network", "none", "--cgroupns", "host", image, "cat", "/proc/self/cgroup")
		if err != nil || !strings.Contains(out, "0::/"+parent+"/") {
			t.Errorf("container cgroup, want below %s: %v\n%s", parent, err, out)
		}
		// Without a default bridge, a container without --network has
		// loopback only.
		out, err = d.Output(t, "run", "--rm", image, "cat", "/proc/net/dev")
		if err != nil || strings.Contains(out, "eth0") || !strings.Contains(out, "lo:") {
			t.Errorf("interfaces without --network: %v\n%s", err, out)
		}
	})
	if parent == "" {
		return
	}
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		if _, err := os.Stat(filepath.Join(h, parent)); err == nil {
			t.Errorf("cgroup %s remains", filepath.Join(h, parent))
		}
	}
}
