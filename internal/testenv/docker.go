package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sluicehq/sluice/interceptor"
)

// Test address ranges of private Docker daemons, inside 198.18.0.0/15
// above what NewHost hands out.
var (
	// dockerBridgeNet holds the /28 of a daemon's default bridge.
	dockerBridgeNet = netip.MustParsePrefix("198.19.253.0/24")
	// dockerNetworkNet holds the /24 of each user-defined network.
	dockerNetworkNet = netip.MustParsePrefix("198.19.248.0/22")
	// dockerPoolNet is the daemon's default-address-pools: a network
	// created without a subnet gets a /28 of it, never one of Docker's
	// built-in 172.17.0.0/16 and 192.168.0.0/16 pools.
	dockerPoolNet = netip.MustParsePrefix("198.19.252.0/24")
	// dockerNetwork6Net holds the /64 of each user-defined IPv6 network.
	dockerNetwork6Net = netip.MustParsePrefix("fdc5:51c3:7e58::/48")
)

// PsqlImageTag is the tag of the image (*Docker).PsqlImage builds.
const PsqlImageTag = "sluice-test/psql:1"

// DockerOptions tune StartDocker. The zero value is a daemon with no
// default bridge (containers use --network host or a network made with
// (*Docker).Network; without --network they get loopback only) whose
// containers go into a fresh test cgroup.
type DockerOptions struct {
	// CgroupParent is where the daemon puts containers, relative to the
	// cgroup2 mount (Cgroup.Rel of a cgroup the test made, or a child of
	// one): each container lands in CgroupParent/<container id>. The
	// daemon passes it to runc as --cgroup-parent /CgroupParent, so on a
	// hybrid host the cgroup v1 hierarchies get the same path; StartDocker
	// removes what appears there at cleanup. "" means a fresh cgroup
	// (NewCgroup) that StartDocker creates and removes.
	CgroupParent string
	// DefaultBridge gives the daemon a default "bridge" network: a Linux
	// bridge the test creates with a /28 out of 198.19.253.0/24 (passed
	// as --bridge), removed at cleanup. Without it the daemon runs with
	// --bridge=none: a container without --network gets loopback only.
	DefaultBridge bool
}

// Docker is a private Docker daemon the test started: its own data root,
// exec root, socket and containerd, all below Dir, with no iptables rules,
// no IP forwarding and no NAT (containers reach only this machine's
// addresses and each other). It never touches the system daemon's socket
// or /var/lib/docker. At cleanup every container and network is removed,
// the daemon stopped and Dir deleted. Its methods may be called from the
// test's goroutines.
type Docker struct {
	Socket       string // the daemon's API socket; Cmd passes it with -H
	Dir          string // everything of the daemon's lives below it; dockerd.log holds its log
	CgroupParent string // containers run in CgroupParent/<id>, relative to the cgroup2 mount
	PID          int    // the dockerd process (it runs in the test's own cgroup, not CgroupParent)
	// Bridge is the default "bridge" network with DockerOptions.DefaultBridge,
	// the zero Network otherwise.
	Bridge Network

	cli     string
	process *exec.Cmd
	done    chan struct{}

	imageMu sync.Mutex
	image   string // PsqlImageTag once built
}

// NetworkOptions tune (*Docker).Network.
type NetworkOptions struct {
	// IPv6 adds a /64 out of fdc5:51c3:7e58::/48 to the network
	// (docker network create --ipv6).
	IPv6 bool
}

// Network is a Docker bridge network with test-chosen subnets.
type Network struct {
	Name     string       // Docker's name for it, for --network
	Link     string       // the Linux bridge behind it
	Subnet   netip.Prefix // IPv4 subnet
	Gateway  netip.Addr   // the bridge's IPv4 address: this machine, seen from the containers
	Subnet6  netip.Prefix // IPv6 subnet; zero without NetworkOptions.IPv6
	Gateway6 netip.Addr
}

// DockerBin finds dockerd and the docker client. The client is the
// distribution's (/usr/bin/docker, the same release as dockerd) when
// there is one, whatever comes first on PATH.
func DockerBin() (dockerd, cli string, err error) {
	dockerd, err = exec.LookPath("dockerd")
	if err != nil {
		// /usr/sbin is not on every PATH.
		dockerd = "/usr/sbin/dockerd"
		if _, err := os.Stat(dockerd); err != nil {
			return "", "", fmt.Errorf("no dockerd found: install the docker.io package")
		}
	}
	cli = "/usr/bin/docker"
	if _, err := os.Stat(cli); err != nil {
		if cli, err = exec.LookPath("docker"); err != nil {
			return "", "", fmt.Errorf("no docker client found: install the docker.io package")
		}
	}
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return "", "", fmt.Errorf("no %s found: install the docker.io package", bin)
		}
	}
	return dockerd, cli, nil
}

// StartDocker starts a private dockerd and waits until it answers `docker
// version`. Its containers go into o.CgroupParent (a fresh test cgroup by
// default); dockerd itself stays in the test's own cgroup.
func StartDocker(t testing.TB, o DockerOptions) *Docker {
	t.Helper()
	RequireRoot(t)
	dockerd, cli, err := DockerBin()
	Need(t, err == nil, fmt.Sprint(err))
	_, err = interceptor.Cgroup2Mount()
	Need(t, err == nil, "no cgroup2 mount on this machine")
	if o.CgroupParent == "" {
		o.CgroupParent = NewCgroup(t).Rel
	}
	o.CgroupParent = strings.Trim(filepath.Clean(o.CgroupParent), "/")

	// Unix sockets have a short path limit: keep Dir short.
	dir, err := os.MkdirTemp("", "sluice-docker-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Docker{Socket: filepath.Join(dir, "docker.sock"), Dir: dir, CgroupParent: o.CgroupParent, cli: cli}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})

	// Paths on the host that dockerd or containerd create outside Dir
	// whatever they are told (containerd's shim sockets go to
	// /run/containerd/s); those that did not exist before are removed at
	// cleanup, directories only when empty.
	hostDirs := []string{"/etc/docker", "/etc/docker/key.json", "/run/docker", "/run/docker/plugins",
		"/run/containerd", "/run/containerd/s", "/run/containerd/fifo", "/run/containerd/runc"}
	var created []string
	for _, p := range hostDirs {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			created = append(created, p)
		}
	}
	t.Cleanup(func() {
		for i := len(created) - 1; i >= 0; i-- {
			if p := created[i]; strings.HasPrefix(p, "/run/containerd/runc") {
				// containerd's runc root holds one directory per namespace.
				removeEmptyTree(p)
			} else {
				os.Remove(p) // only if empty: another daemon may use it now
			}
		}
	})

	cgroupDirs := cgroupLevels(t, o.CgroupParent)
	t.Cleanup(func() { removeCgroupLeftovers(t, cgroupDirs) })

	args := []string{"--config-file", filepath.Join(dir, "daemon.json"),
		"--data-root", filepath.Join(dir, "root"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", "unix://" + d.Socket,
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--userland-proxy=false", "--storage-driver=overlay2", "--exec-opt", "native.cgroupdriver=cgroupfs",
		"--cgroup-parent", "/" + o.CgroupParent}
	if o.DefaultBridge {
		d.Bridge = newTestBridge(t)
		args = append(args, "--bridge", d.Bridge.Link)
	} else {
		args = append(args, "--bridge=none")
	}
	// A config file of our own keeps /etc/docker/daemon.json out. IPv6
	// on user-defined networks (docker network create --ipv6) needs
	// neither "ipv6" (which is about the default bridge) nor
	// "experimental" in 20.10.
	config := map[string]any{
		"default-address-pools": []map[string]any{{"base": dockerPoolNet.String(), "size": 28}},
	}
	if dockerdMajor(dockerd) < 23 {
		// The identity key, which dockerd before 23.0 writes to
		// /etc/docker/key.json by default (it has no flag for it).
		config["deprecated-key-path"] = filepath.Join(dir, "key.json")
	}
	b, _ := json.Marshal(config)
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}

	logPath := filepath.Join(dir, "dockerd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(dockerd, args...)
	cmd.Env = dockerEnv(dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so stopGroup reaches it alone; killed with
	// the test binary if that dies without its cleanup (containerd, which
	// dockerd starts, dies with dockerd the same way).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start dockerd: %v", err)
	}
	logf.Close()
	d.process, d.PID = cmd, cmd.Process.Pid
	d.done = make(chan struct{})
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.stop(t) })

	if err := d.waitReady(60 * time.Second); err != nil {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("dockerd: %v\n%s", err, log)
	}
	t.Logf("dockerd %d ready on %s in %v", d.PID, d.Socket, time.Since(start).Round(time.Millisecond))
	return d
}

// dockerdMajor returns the major version dockerd prints ("Docker version
// 20.10.24+dfsg1, build 297e128" is 20), 0 if it cannot tell.
func dockerdMajor(dockerd string) int {
	out, err := exec.Command(dockerd, "--version").Output()
	if err != nil {
		return 0
	}
	_, v, _ := strings.Cut(string(out), "version ")
	major, _, _ := strings.Cut(v, ".")
	n, _ := strconv.Atoi(major)
	return n
}

// dockerEnv is the environment of dockerd and the docker client: the
// test's, without DOCKER_* settings that could point the client
// elsewhere, with the client's configuration in dir/cli (so nothing reads
// ~/.docker) and the sbin directories on PATH for containerd and runc.
func dockerEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "DOCKER_") || strings.HasPrefix(kv, "PATH=") {
			continue
		}
		env = append(env, kv)
	}
	path := os.Getenv("PATH")
	for _, p := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if !strings.Contains(":"+path+":", ":"+p+":") {
			path += ":" + p
		}
	}
	return append(env, "PATH="+strings.TrimPrefix(path, ":"), "DOCKER_CONFIG="+filepath.Join(dir, "cli"))
}

// waitReady waits until the daemon answers `docker version`, it exits,
// or d passes.
func (d *Docker) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("exited before it answered: %v", d.process.ProcessState)
		default:
		}
		if _, err := os.Stat(d.Socket); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			out, err := d.Cmd(ctx, "version", "--format", "{{.Server.Version}}").CombinedOutput()
			cancel()
			if err == nil && len(bytes.TrimSpace(out)) > 0 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer to docker version within %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Cmd returns the docker client set up to talk to this daemon only.
func (d *Docker) Cmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.cli, append([]string{"-H", "unix://" + d.Socket}, args...)...)
	cmd.Env = dockerEnv(d.Dir)
	return cmd
}

// Run runs the docker client with args and returns its combined output
// (stdout and stderr, which holds the daemon's warnings; see Output); it
// gives up after 60 s.
func (d *Docker) Run(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := d.Cmd(ctx, args...).CombinedOutput()
	return string(out), err
}

// Output runs the docker client with args and returns what it printed on
// stdout; an error carries stderr. Unlike Run's, its output holds only
// the container's (for `docker run`): the client also prints daemon
// warnings on stderr, such as "IPv4 forwarding is disabled" for every
// container on a bridge network (forwarding stays off on purpose: a
// container reaches this machine's addresses without it). It gives up
// after 60 s.
func (d *Docker) Output(t testing.TB, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := d.Cmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", args[0], err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}

// lines runs the client and returns the non-empty lines it printed.
func (d *Docker) lines(args ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := d.Cmd(ctx, args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return strings.Fields(string(out)), nil
}

// stop removes every container and network, stops the daemon (SIGTERM,
// SIGKILL after 30 s), and undoes what it leaves behind: mounts below Dir
// and processes (containerd, shims) still holding Dir.
func (d *Docker) stop(t testing.TB) {
	if d.process == nil {
		return
	}
	select {
	case <-d.done:
		t.Errorf("dockerd exited before cleanup: %v (log in %s)", d.process.ProcessState, filepath.Join(d.Dir, "dockerd.log"))
	default:
		if ids, err := d.lines("ps", "-aq"); err != nil {
			t.Errorf("list containers: %v", err)
		} else if len(ids) > 0 {
			if out, err := d.Run(t, append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
				t.Errorf("remove containers: %v\n%s", err, out)
			}
		}
		if ids, err := d.lines("network", "ls", "-q", "--filter", "type=custom"); err != nil {
			t.Errorf("list networks: %v", err)
		} else if len(ids) > 0 {
			if out, err := d.Run(t, append([]string{"network", "rm"}, ids...)...); err != nil {
				t.Errorf("remove networks: %v\n%s", err, out)
			}
		}
	}
	stopGroup(d.process, d.done, syscall.SIGTERM, 30*time.Second)
	d.process = nil

	// Nothing of the daemon's may outlive it. A process whose command
	// line names Dir was started by it (containerd, a shim of a container
	// that escaped removal).
	for _, pid := range processesUsing(d.Dir) {
		t.Errorf("process %d of the private dockerd outlived it; killing it", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, m := range mountsBelow(d.Dir) {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", m, err)
		}
	}
}

// processesUsing returns the pids whose command line contains dir.
func processesUsing(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && bytes.Contains(b, []byte(dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// mountsBelow returns the mount points at or below dir in the test's
// mount namespace, deepest first.
func mountsBelow(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw
		if fs := strings.Fields(sc.Text()); len(fs) >= 5 {
			m := unescapeOctal(fs[4])
			if m == dir || strings.HasPrefix(m, dir+"/") {
				ms = append(ms, m)
			}
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(ms)))
	return ms
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupLevel is a directory in one cgroup hierarchy on the way to a
// daemon's cgroup parent, and whether it existed before the daemon.
type cgroupLevel struct {
	path    string
	existed bool
}

// cgroupLevels lists, for every cgroup hierarchy mounted (the cgroup2 one
// and, on a hybrid host, each v1 one), the directories from the root down
// to rel, outermost first.
func cgroupLevels(t testing.TB, rel string) []cgroupLevel {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	defer f.Close()
	var levels []cgroupLevel
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fsType, pf := strings.Fields(post), strings.Fields(pre)
		if len(fsType) == 0 || (fsType[0] != "cgroup" && fsType[0] != "cgroup2") || len(pf) < 5 {
			continue
		}
		cur := unescapeOctal(pf[4])
		for _, part := range strings.Split(rel, "/") {
			cur = filepath.Join(cur, part)
			_, err := os.Stat(cur)
			levels = append(levels, cgroupLevel{cur, err == nil})
		}
	}
	return levels
}

// removeCgroupLeftovers removes the container cgroups runc left below the
// cgroup parent in every hierarchy (empty by then), and the levels of the
// path that the daemon created.
func removeCgroupLeftovers(t testing.TB, levels []cgroupLevel) {
	for i := len(levels) - 1; i >= 0; i-- {
		l := levels[i]
		if _, err := os.Stat(l.path); err != nil {
			continue
		}
		ents, _ := os.ReadDir(l.path)
		for _, e := range ents {
			if e.IsDir() && !isLevel(levels, filepath.Join(l.path, e.Name())) {
				if err := removeEmptyTree(filepath.Join(l.path, e.Name())); err != nil {
					t.Errorf("remove container cgroup: %v", err)
				}
			}
		}
		if !l.existed {
			if err := os.Remove(l.path); err != nil {
				t.Errorf("remove cgroup %s: %v", l.path, err)
			}
		}
	}
}

func isLevel(levels []cgroupLevel, p string) bool {
	for _, l := range levels {
		if l.path == p {
			return true
		}
	}
	return false
}

// removeEmptyTree removes dir and the directories below it, deepest
// first; cgroup directories without processes go with rmdir although
// they seem to hold files.
func removeEmptyTree(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var last error
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !os.IsNotExist(err) {
			last = err
		}
	}
	return last
}

// newTestBridge creates a Linux bridge with a free /28 out of
// 198.19.253.0/24 for a daemon's default network, and deletes it at
// cleanup (registered before the daemon's, so it runs after the daemon
// stopped).
func newTestBridge(t testing.TB) Network {
	t.Helper()
	subnet := freeSubnet(t, dockerBridgeNet, 28)
	n := Network{Name: "bridge", Link: RandName("sl-br-"), Subnet: subnet, Gateway: subnet.Addr().Next()}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Link}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatalf("add bridge %s: %v", n.Link, err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(n.Link); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete bridge %s: %v", n.Link, err)
			}
		}
	})
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: ipnet(n.Gateway, subnet.Bits())}); err != nil {
		t.Fatalf("address bridge %s: %v", n.Link, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		t.Fatalf("bring up bridge %s: %v", n.Link, err)
	}
	return n
}

// freeSubnet picks a random prefix of length bits inside within that
// overlaps no address or route of this machine.
func freeSubnet(t testing.TB, within netip.Prefix, bits int) netip.Prefix {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		if p := randSubnet(within, bits); !claimed(p) {
			return p
		}
	}
	t.Fatalf("no free /%d in %s", bits, within)
	return netip.Prefix{}
}

// Network creates a user-defined bridge network with a free /24 out of
// 198.19.248.0/22 (and with o.IPv6 a /64 out of fdc5:51c3:7e58::/48) and
// removes it at cleanup, with the containers still attached to it.
func (d *Docker) Network(t testing.TB, o NetworkOptions) Network {
	t.Helper()
	n := Network{Name: RandName("sluice-net-"), Link: RandName("sl-nw-")}
	n.Subnet = freeSubnet(t, dockerNetworkNet, 24)
	n.Gateway = n.Subnet.Addr().Next()
	args := []string{"network", "create", "--driver", "bridge",
		"--subnet", n.Subnet.String(), "--gateway", n.Gateway.String(),
		"--opt", "com.docker.network.bridge.name=" + n.Link,
		"--opt", "com.docker.network.bridge.enable_ip_masquerade=false"}
	if o.IPv6 {
		n.Subnet6 = freeSubnet(t, dockerNetwork6Net, 64)
		n.Gateway6 = n.Subnet6.Addr().Next()
		args = append(args, "--ipv6", "--subnet", n.Subnet6.String(), "--gateway", n.Gateway6.String())
	}
	if out, err := d.Run(t, append(args, n.Name)...); err != nil {
		t.Fatalf("docker network create: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if ids, err := d.lines("ps", "-aq", "--filter", "network="+n.Name); err != nil {
			t.Errorf("list containers on %s: %v", n.Name, err)
		} else if len(ids) > 0 {
			d.Run(t, append([]string{"rm", "-f", "-v"}, ids...)...)
		}
		if out, err := d.Run(t, "network", "rm", n.Name); err != nil {
			t.Errorf("docker network rm %s: %v\n%s", n.Name, err, out)
		}
	})
	return n
}

// PsqlImage returns the tag of a small image built from this machine's
// files, no registry involved: busybox (static) as /bin/sh and the other
// applets on PATH, psql of the newest installed PostgreSQL, the mariadb
// client when installed (as mariadb and mysql), and the libraries they
// load. It is built on the first call and reused by later ones.
func (d *Docker) PsqlImage(t testing.TB) string {
	t.Helper()
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	if d.image != "" {
		return d.image
	}
	start := time.Now()
	rootfs, err := psqlRootfs()
	Need(t, err == nil, fmt.Sprint(err))
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	cmd := d.Cmd(ctx, "import", "--change", "ENV PATH=/bin:/usr/bin", "--change", "CMD [\"/bin/sh\"]", "-", PsqlImageTag)
	cmd.Stdin = bytes.NewReader(rootfs)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("docker import: %v\n%s", err, out)
	}
	t.Logf("built %s (%d MB rootfs) in %v", PsqlImageTag, len(rootfs)>>20, time.Since(start).Round(time.Millisecond))
	d.image = PsqlImageTag
	return d.image
}

// psqlRootfs writes the image's root file system as a tar archive.
func psqlRootfs() ([]byte, error) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return nil, fmt.Errorf("no busybox found: install the busybox-static package")
	}
	if !isStatic(busybox) {
		return nil, fmt.Errorf("%s is linked dynamically: install the busybox-static package", busybox)
	}
	psql, err := psqlBinary()
	if err != nil {
		return nil, err
	}
	list, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}

	r := newRootfs()
	for _, dir := range []string{"/bin", "/usr/bin", "/etc", "/root", "/proc", "/sys", "/dev", "/run", "/var"} {
		r.dir(dir, 0o755)
	}
	r.dir("/tmp", 0o1777)
	r.text("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
	r.text("/etc/group", "root:x:0:\nnogroup:x:65534:\n")
	r.file("/bin/busybox", busybox)
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			r.symlink("/bin/"+applet, "busybox")
		}
	}
	if err := r.binary("/usr/bin/psql", psql); err != nil {
		return nil, err
	}
	if mariadb := mariadbClient(); mariadb != "" {
		if err := r.binary("/usr/bin/mariadb", mariadb); err != nil {
			return nil, err
		}
		r.symlink("/usr/bin/mysql", "mariadb")
		// Authentication plugins the client loads by name
		// (client_ed25519, caching_sha2_password, ...).
		plugins, _ := filepath.Glob("/usr/lib/x86_64-linux-gnu/libmariadb3/plugin/*.so")
		for _, p := range plugins {
			if err := r.binary(p, p); err != nil {
				return nil, err
			}
		}
	}
	return r.close()
}

// psqlBinary finds the real psql of the newest PostgreSQL (Debian's
// /usr/bin/psql is a perl wrapper that picks a version).
func psqlBinary() (string, error) {
	var cands []string
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		cands = append(cands, filepath.Join(strings.TrimSpace(string(out)), "psql"))
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		cands = append(cands, filepath.Join(d, "psql"))
	}
	for _, c := range cands {
		if f, err := elf.Open(c); err == nil {
			f.Close()
			return c, nil
		}
	}
	return "", fmt.Errorf("no psql binary found: install the postgresql-client package")
}

// mariadbClient finds the mariadb (or mysql) client binary, "" if there
// is none.
func mariadbClient() string {
	for _, name := range []string{"mariadb", "mysql"} {
		if p, err := exec.LookPath(name); err == nil {
			if real, err := filepath.EvalSymlinks(p); err == nil {
				if f, err := elf.Open(real); err == nil {
					f.Close()
					return real
				}
			}
		}
	}
	return ""
}

// isStatic reports whether the ELF file at path has no program
// interpreter.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// rootfs builds a tar archive of a root file system, creating parent
// directories as entries need them.
type rootfs struct {
	buf  bytes.Buffer
	tw   *tar.Writer
	seen map[string]bool
	err  error
}

func newRootfs() *rootfs {
	r := &rootfs{seen: map[string]bool{"/": true}}
	r.tw = tar.NewWriter(&r.buf)
	return r
}

func (r *rootfs) header(h *tar.Header) {
	if r.err != nil || r.seen[h.Name] {
		return
	}
	r.parents(h.Name)
	r.seen[h.Name] = true
	name := strings.TrimPrefix(h.Name, "/")
	if h.Typeflag == tar.TypeDir {
		name += "/"
	}
	h.Name = name
	h.ModTime = time.Unix(0, 0)
	r.err = r.tw.WriteHeader(h)
}

func (r *rootfs) parents(p string) {
	if parent := filepath.Dir(p); !r.seen[parent] {
		r.dir(parent, 0o755)
	}
}

func (r *rootfs) dir(p string, mode int64) {
	r.header(&tar.Header{Typeflag: tar.TypeDir, Name: p, Mode: mode})
}

func (r *rootfs) symlink(p, target string) {
	r.header(&tar.Header{Typeflag: tar.TypeSymlink, Name: p, Linkname: target, Mode: 0o777})
}

func (r *rootfs) text(p, content string) {
	r.data(p, []byte(content), 0o644)
}

func (r *rootfs) data(p string, b []byte, mode int64) {
	if r.seen[p] {
		return
	}
	r.header(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(b))})
	if r.err == nil {
		_, r.err = r.tw.Write(b)
	}
}

// file copies src (following symlinks) to p with its permissions.
func (r *rootfs) file(p, src string) {
	if r.err != nil || r.seen[p] {
		return
	}
	b, err := os.ReadFile(src)
	if err != nil {
		r.err = err
		return
	}
	fi, err := os.Stat(src)
	if err != nil {
		r.err = err
		return
	}
	r.data(p, b, int64(fi.Mode().Perm()))
}

// binary copies the dynamically linked program src to p together with the
// dynamic loader and every library ldd lists for it, each at the path
// ldd names.
func (r *rootfs) binary(p, src string) error {
	r.file(p, src)
	out, err := exec.Command("ldd", src).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", src, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && f[2] == "not":
			return fmt.Errorf("%s: library %s not found", src, f[0])
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			r.file(f[2], f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			r.file(f[0], f[0]) // the loader
		}
	}
	return r.err
}

func (r *rootfs) close() ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	if err := r.tw.Close(); err != nil {
		return nil, err
	}
	return r.buf.Bytes(), nil
}
