package packaging

// The package is built from the real binaries and checked with dpkg-deb
// the way an operator's machine would see it: fields, files and modes,
// conffiles, maintainer scripts, the unit's settings, and
// systemd-analyze verify when it is installed. Needs dpkg-deb (every
// Debian machine has it); no root.

import (
	"bufio"
	"compress/gzip"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/sshca"
	"github.com/sluicehq/sluice/internal/testenv"
)

// documentedCaps is the capability set the README and the unit's comments
// explain; the unit must grant exactly these.
var documentedCaps = []string{"CAP_BPF", "CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_PTRACE"}

func TestDebVersion(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"v1.2.0", "1.2.0"},
		{"v1.2.0-3-gabc1234", "1.2.0+git3.gabc1234"},
		{"v1.2.0-3-gabc1234-dirty", "1.2.0+git3.gabc1234.dirty"},
		{"0c12581", "0.0.0+git0c12581"},
		{"0c12581-dirty", "0.0.0+git0c12581.dirty"},
		{"1234567", "0.0.0+git1234567"},
		{"", "0.0.0"},
	} {
		if got := DebVersion(c.in); got != c.want {
			t.Errorf("DebVersion(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// built is one package built for the test, and its extracted trees.
type built struct {
	deb     string
	root    string // dpkg-deb -x
	control string // dpkg-deb -e
}

func TestMain(m *testing.M) { testenv.Main(m) }

func buildPackage(t *testing.T) built {
	t.Helper()
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		testenv.Need(t, false, "dpkg-deb is not installed (it comes with dpkg on every Debian machine)")
	}
	bins := testenv.Binaries(t)
	out := t.TempDir()
	version := DebVersion(testenv.Describe)
	deb, err := Build(Options{Dir: ".", BinDir: bins, Readme: "../README.md", Version: version, Arch: runtime.GOARCH,
		OutDir: out, MTime: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(out, "sluice_1.2.3+git4.gabcdef0_"+runtime.GOARCH+".deb"); deb != want {
		t.Fatalf("package written to %s, want %s", deb, want)
	}
	b := built{deb: deb, root: filepath.Join(out, "root"), control: filepath.Join(out, "control")}
	dpkgDeb(t, "-x", deb, b.root)
	dpkgDeb(t, "-e", deb, b.control)
	return b
}

func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("dpkg-deb", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, ee.Stderr)
		}
		t.Fatalf("dpkg-deb %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// TestPackageVersionMismatch: binaries that print another version than
// the package's are refused, with both versions named.
func TestPackageVersionMismatch(t *testing.T) {
	bins := testenv.Binaries(t)
	_, err := Build(Options{Dir: ".", BinDir: bins, Version: "9.9.9", Arch: runtime.GOARCH, OutDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `prints "sluiced 1.2.3+git4.gabcdef0", but the package's version is 9.9.9`) {
		t.Errorf("Build with binaries of another version: %v", err)
	}
}

func TestPackage(t *testing.T) {
	b := buildPackage(t)

	t.Run("control", func(t *testing.T) {
		for field, want := range map[string]string{
			"Package":      "sluice",
			"Version":      "1.2.3+git4.gabcdef0",
			"Architecture": runtime.GOARCH,
			"Section":      "admin",
			"Depends":      "libc6",
		} {
			if got := strings.TrimSpace(dpkgDeb(t, "--field", b.deb, field)); got != want {
				t.Errorf("control field %s = %q, want %q", field, got, want)
			}
		}
		if d := dpkgDeb(t, "--field", b.deb, "Description"); !strings.Contains(d, "CI runners") {
			t.Errorf("Description = %q", d)
		}
		conf, err := os.ReadFile(filepath.Join(b.control, "conffiles"))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Fields(string(conf)); !slices.Equal(got, []string{ConfigPath}) {
			t.Errorf("conffiles = %q, want exactly %s", got, ConfigPath)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			p := filepath.Join(b.control, s)
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("maintainer script %s missing: %v", s, err)
				continue
			}
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("%s mode %v, want 0755", s, fi.Mode().Perm())
			}
			if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
				t.Errorf("%s does not parse: %v\n%s", s, err, out)
			}
		}
	})

	t.Run("contents", func(t *testing.T) {
		// mode owner/group size date time path
		type entry struct{ mode, owner string }
		got := map[string]entry{}
		for _, line := range strings.Split(strings.TrimSpace(dpkgDeb(t, "--contents", b.deb)), "\n") {
			f := strings.Fields(line)
			if len(f) < 6 {
				t.Fatalf("unexpected dpkg-deb --contents line %q", line)
			}
			got[strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")] = entry{f[0], f[1]}
		}
		want := map[string]string{
			DaemonPath: "-rwxr-xr-x",
			CLIPath:    "-rwxr-xr-x",
			UnitPath:   "-rw-r--r--",
			SlicePath:  "-rw-r--r--",
			SocketPath: "-rw-r--r--",
			ConfigPath: "-rw-------",
			RulesDir:   "drwxr-xr-x",
			DocPath:    "-rw-r--r--",

			BashCompletionPath: "-rw-r--r--",
			ZshCompletionPath:  "-rw-r--r--",
			FishCompletionPath: "-rw-r--r--",
		}
		// A man page for the CLI and each of its commands.
		for _, page := range []string{"sluice", "sluice-run", "sluice-status", "sluice-doctor", "sluice-rules", "sluice-rules-check", "sluice-rules-explain", "sluice-sessions-list"} {
			want[ManDir+"/"+page+".1.gz"] = "-rw-r--r--"
		}
		for p, e := range got {
			if strings.HasPrefix(p, ManDir+"/sluice") && strings.HasSuffix(p, ".1.gz") {
				want[p] = "-rw-r--r--"
				if e.mode != "-rw-r--r--" {
					t.Errorf("%s: %s, want -rw-r--r--", p, e.mode)
				}
			}
		}
		for p, mode := range want {
			e, ok := got[p]
			if !ok {
				t.Errorf("package lacks %s", p)
				continue
			}
			if e.mode != mode || e.owner != "root/root" {
				t.Errorf("%s: %s %s, want %s root/root", p, e.mode, e.owner, mode)
			}
		}
		for p, e := range got {
			if _, ok := want[p]; !ok && !strings.HasPrefix(e.mode, "d") {
				t.Errorf("package holds unexpected file %s", p)
			}
		}
		if ents, err := os.ReadDir(filepath.Join(b.root, RulesDir)); err != nil || len(ents) != 0 {
			t.Errorf("%s must ship empty so the embedded default applies: %v %v", RulesDir, ents, err)
		}
	})

	t.Run("man pages and completions", func(t *testing.T) {
		f, err := os.Open(filepath.Join(b.root, ManDir, "sluice-rules-explain.1.gz"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("sluice-rules-explain.1.gz is not gzip: %v", err)
		}
		if zr.Name != "" || !zr.ModTime.IsZero() {
			t.Errorf("gzip header holds name %q and time %v; Debian wants gzip -n", zr.Name, zr.ModTime)
		}
		page, _ := io.ReadAll(zr)
		for _, want := range []string{`.TH "SLUICE" "1" "Jan 2026" "Sluice 1.2.3+git4.gabcdef0"`, ".SH OPTIONS", "--identity-level", "sluice rules explain"} {
			if !strings.Contains(string(page), want) {
				t.Errorf("man page lacks %q:\n%.600s", want, page)
			}
		}
		bash := filepath.Join(b.root, BashCompletionPath)
		if out, err := exec.Command("bash", "-n", bash).CombinedOutput(); err != nil {
			t.Errorf("bash completion does not parse: %v\n%s", err, out)
		}
		for p, want := range map[string]string{bash: "__start_sluice", filepath.Join(b.root, ZshCompletionPath): "#compdef sluice",
			filepath.Join(b.root, FishCompletionPath): "complete -c sluice"} {
			if src, err := os.ReadFile(p); err != nil || !strings.Contains(string(src), want) {
				t.Errorf("%s lacks %q: %v", p, want, err)
			}
		}
	})

	t.Run("unit", func(t *testing.T) {
		unit := parseUnit(t, filepath.Join(b.root, UnitPath))
		svc := unit["Service"]
		one := func(key, want string) {
			t.Helper()
			if got := svc[key]; len(got) != 1 || got[0] != want {
				t.Errorf("[Service] %s = %q, want %q", key, got, want)
			}
		}
		one("Slice", "sluice.slice")
		one("Restart", "always")
		one("NoNewPrivileges", "yes")
		one("ProtectSystem", "strict")
		one("StateDirectory", "sluice")
		one("RuntimeDirectory", "sluice")

		exec := strings.Fields(strings.Join(svc["ExecStart"], " "))
		if len(exec) == 0 || exec[0] != DaemonPath {
			t.Fatalf("ExecStart = %q, want the packaged %s", svc["ExecStart"], DaemonPath)
		}
		if fi, err := os.Stat(filepath.Join(b.root, exec[0])); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("ExecStart %s is not an executable in the package: %v", exec[0], err)
		}
		if !slices.Contains(exec, ConfigPath) {
			t.Errorf("ExecStart %q does not use the packaged config %s", exec, ConfigPath)
		}

		unitText, _ := os.ReadFile(filepath.Join(b.root, UnitPath))
		for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
			caps := strings.Fields(strings.Join(svc[key], " "))
			sort.Strings(caps)
			if !slices.Equal(caps, documentedCaps) {
				t.Errorf("%s = %v, want exactly %v", key, caps, documentedCaps)
			}
		}
		for _, c := range documentedCaps {
			if !strings.Contains(string(unitText), "#   "+c+" ") {
				t.Errorf("the unit does not explain why it needs %s", c)
			}
		}
		rw := strings.Fields(strings.Join(svc["ReadWritePaths"], " "))
		if !slices.Contains(rw, "/sys/fs/bpf") {
			t.Errorf("ReadWritePaths %v lacks /sys/fs/bpf: pins could not be written", rw)
		}
		if !slices.Contains(rw, "-"+RulesDir) {
			t.Errorf("ReadWritePaths %v lacks %s: pushed rules could not be saved there", rw, RulesDir)
		}

		// The default config's paths are the ones the unit makes writable.
		conf, err := os.ReadFile(filepath.Join(b.root, ConfigPath))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`data_dir   = "/var/lib/sluice"`, `api_socket = "/run/sluice/sluiced.sock"`, `metrics_addr = "127.0.0.1:9464"`} {
			if !strings.Contains(string(conf), want) {
				t.Errorf("default config lacks %s", want)
			}
		}

		// The socket unit holds the proxy port of the shipped config on
		// both loopback addresses, and the service takes it.
		sock := parseUnit(t, filepath.Join(b.root, SocketPath))
		if got := sock["Socket"]["ListenStream"]; !slices.Equal(got, []string{"127.0.0.1:15001", "[::1]:15001"}) {
			t.Errorf("sluiced.socket ListenStream = %q, want the proxy_port on 127.0.0.1 and ::1", got)
		}
		if !strings.Contains(string(conf), "proxy_port = 15001") {
			t.Errorf("default config's proxy_port is not the socket unit's 15001")
		}
		if got := unit["Unit"]["Requires"]; !slices.Contains(got, "sluiced.socket") {
			t.Errorf("[Unit] Requires = %q, want sluiced.socket", got)
		}

		slice := parseUnit(t, filepath.Join(b.root, SlicePath))
		if _, ok := slice["Slice"]; !ok {
			t.Errorf("sluice.slice has no [Slice] section")
		}
	})

	t.Run("binaries", func(t *testing.T) {
		// The packaged daemon with the packaged config refuses to start
		// until `sluice install` has named the runner's cgroup.
		cmd := exec.Command(filepath.Join(b.root, DaemonPath), "--config", filepath.Join(b.root, ConfigPath))
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("sluiced with the default config: %v, want exit status 2 (no restart under the unit)\n%s", err, out)
		}
		if !strings.Contains(string(out), "run `sluice install`") {
			t.Errorf("sluiced with the default config says %q, want it to tell the operator to run sluice install", out)
		}
		out, err = exec.Command(filepath.Join(b.root, CLIPath), "help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "doctor") {
			t.Errorf("packaged sluice help: %v\n%s", err, out)
		}
		// The binaries print the package's version.
		for _, p := range []string{DaemonPath, CLIPath} {
			out, err := exec.Command(filepath.Join(b.root, p), "--version").Output()
			if want := filepath.Base(p) + " 1.2.3+git4.gabcdef0\n"; err != nil || string(out) != want {
				t.Errorf("packaged %s --version: %v %q, want %q", p, err, out, want)
			}
		}
	})

	t.Run("prerm refuses while pinned", func(t *testing.T) {
		// prerm looks under $SLUICE_BPFFS (default /sys/fs/bpf); give it
		// a directory that looks like an installation's pins.
		fake := t.TempDir()
		if err := os.MkdirAll(filepath.Join(fake, "sluice", "default"), 0o700); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", filepath.Join(b.control, "prerm"), "remove")
		cmd.Env = append(os.Environ(), "SLUICE_BPFFS="+fake)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("prerm remove succeeded with pins in place:\n%s", out)
		}
		if !strings.Contains(string(out), "sluice uninstall") || !strings.Contains(string(out), "default") {
			t.Errorf("prerm says %q, want the pinned installation and `sluice uninstall`", out)
		}
	})

	t.Run("postrm remove takes out the SSH CA lines", func(t *testing.T) {
		// Every installation's line sluice install wrote goes, with its
		// marker; an operator's own lines stay byte for byte. A stub
		// systemctl keeps the script off the host's systemd.
		dir := t.TempDir()
		bin := filepath.Join(dir, "bin")
		os.Mkdir(bin, 0o755)
		os.WriteFile(filepath.Join(bin, "systemctl"), []byte("#!/bin/sh\nexit 0\n"), 0o755)
		const mine = "# deploy hosts\ngit.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
		k1, _, _ := ed25519.GenerateKey(nil)
		k2, _, _ := ed25519.GenerateKey(nil)
		data, _ := sshca.AddLine([]byte(mine), "default", k1)
		data, _ = sshca.AddLine(data, "ci test", k2)
		operator := "@cert-authority *.corp " + sshca.PublicLine(k1) + "\n"
		data = append(data, operator...)
		kh := filepath.Join(dir, "ssh_known_hosts")
		os.WriteFile(kh, data, 0o644)
		postrmRemove := func() (string, error) {
			cmd := exec.Command("sh", filepath.Join(b.control, "postrm"), "remove")
			cmd.Env = append(os.Environ(), "SLUICE_SSH_KNOWN_HOSTS="+kh, "PATH="+bin+":"+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := postrmRemove()
		if err != nil || !strings.Contains(out, "removed the SSH host CA's @cert-authority line from "+kh) {
			t.Fatalf("postrm remove: %v\n%s", err, out)
		}
		if got, _ := os.ReadFile(kh); string(got) != mine+operator {
			t.Errorf("known_hosts after postrm remove:\n%s\nwant:\n%s", got, mine+operator)
		}
		if fi, _ := os.Stat(kh); fi.Mode().Perm() != 0o644 {
			t.Errorf("mode %v, want 0644 kept", fi.Mode().Perm())
		}
		// Without Sluice's lines the file is not rewritten.
		before, _ := os.Stat(kh)
		if out, err := postrmRemove(); err != nil || strings.Contains(out, "removed") {
			t.Errorf("second postrm remove: %v\n%s", err, out)
		}
		if after, _ := os.Stat(kh); !os.SameFile(before, after) {
			t.Error("a file without Sluice's lines was rewritten")
		}
	})

	t.Run("systemd-analyze verify", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Skip("systemd-analyze is not installed; the unit was checked by parsing only")
		}
		// Verify inside a root holding the package plus the host's own
		// units (the targets the unit's default dependencies name), so
		// ExecStart resolves to the packaged binary.
		root := t.TempDir()
		if out, err := exec.Command("cp", "-a", b.root+"/.", root).CombinedOutput(); err != nil {
			t.Fatalf("copy package tree: %v\n%s", err, out)
		}
		for _, d := range []string{"/usr/lib/systemd/system", "/lib/systemd/system"} {
			if _, err := os.Stat(filepath.Join(d, "sysinit.target")); err == nil {
				if out, err := exec.Command("cp", "-rn", d+"/.", filepath.Join(root, "usr/lib/systemd/system")).CombinedOutput(); err != nil {
					t.Fatalf("copy host units: %v\n%s", err, out)
				}
				break
			}
		}
		out, err := exec.Command("systemd-analyze", "verify", "--root="+root, UnitPath, SlicePath, SocketPath).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	})
}

// parseUnit reads a systemd unit file into section -> key -> values
// (a key given several times keeps every value).
func parseUnit(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot parse line %q", path, line)
			}
			out[section][strings.TrimSpace(k)] = append(out[section][strings.TrimSpace(k)], strings.TrimSpace(v))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
