package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/internal/api"
)

// TestDoctorConfig: doctor reads where to look from the daemon's config,
// and the packaged config (no cgroup until `sluice install`) is a FAIL
// whose fix says to run sluice install.
func TestDoctorConfig(t *testing.T) {
	cfg, f := readDoctorConfig("../../packaging/sluiced.hcl")
	if f.level != levelFail || !strings.Contains(f.fix, "sluice install") {
		t.Errorf("packaged config: %+v, want FAIL with a fix naming sluice install", f)
	}
	if cfg.Name != "default" || cfg.APISocket != "/run/sluice/sluiced.sock" || cfg.ProxyPort != 15001 || cfg.MetricsAddr != "127.0.0.1:9464" {
		t.Errorf("packaged config read as %+v", cfg)
	}

	p := filepath.Join(t.TempDir(), "sluiced.hcl")
	os.WriteFile(p, []byte("name = \"ci\"\ncgroup = \"runner.slice\"\nproxy_port = 16000\nlog {\n  level = \"debug\"\n}\nidentity {\n}\n"), 0o600)
	cfg, f = readDoctorConfig(p)
	if f.level != levelOK || cfg.Name != "ci" || cfg.ProxyPort != 16000 || len(cfg.Cgroups) != 1 || cfg.Cgroups[0] != "runner.slice" || cfg.DataDir != "/var/lib/sluice" {
		t.Errorf("config with blocks doctor does not read: %+v %+v", f, cfg)
	}

	// The daemon's own checks: a typo and an invalid value are FAILs
	// naming the line, as sluiced refuses them at start.
	for body, want := range map[string]string{
		"cgroup = \"r\"\nproxy_prot = 1\n":     ":2: Unsupported argument",
		"cgroup = \"r\"\nproxy_port = 70000\n": ":2: Invalid proxy_port",
	} {
		os.WriteFile(p, []byte(body), 0o600)
		if _, f := readDoctorConfig(p); f.level != levelFail || !strings.Contains(f.detail, want) {
			t.Errorf("%q: %+v, want FAIL naming %q", body, f, want)
		}
	}

	_, f = readDoctorConfig(filepath.Join(t.TempDir(), "missing.hcl"))
	if f.level != levelWarn || f.fix == "" {
		t.Errorf("missing config: %+v, want warn with a fix", f)
	}
}

// TestDoctorDisk: the data dir need not exist yet (the daemon creates it);
// the file system holding its nearest parent is measured.
func TestDoctorDisk(t *testing.T) {
	f := checkDisk(filepath.Join(t.TempDir(), "not", "yet"))
	if f.level == "" || !strings.Contains(f.detail, "free of") {
		t.Errorf("disk check: %+v", f)
	}
}

// TestHookedFor: Docker's cgroup-parent maps to the cgroup it puts
// containers under, for both drivers, as install writes them.
func TestHookedFor(t *testing.T) {
	for _, driver := range []string{"cgroupfs", "systemd"} {
		parent, hooked := containerParent(driver)
		if got := hookedFor(parent); got != hooked {
			t.Errorf("%s: hookedFor(%q) = %q, want %q", driver, parent, got, hooked)
		}
	}
	for in, want := range map[string]string{"/a/b": "a/b", "x.slice": "x.slice", "a-b-c.slice": "a.slice/a-b.slice/a-b-c.slice", "": ""} {
		if got := hookedFor(in); got != want {
			t.Errorf("hookedFor(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSudoersNopasswd: the sudoers reading behind doctor's root check
// finds the rule that gives the runner's user (ci, uid 1001, groups ci
// and docker) passwordless sudo for every command as root, by file and
// line, and nothing when no such rule is the last to match.
func TestSudoersNopasswd(t *testing.T) {
	ci := sudoUser{name: "ci", uid: "1001", groups: []string{"ci", "docker"}, gids: []string{"1001", "998"}}
	const debian = "Defaults\tenv_reset\nroot\tALL=(ALL:ALL) ALL\n%sudo\tALL=(ALL:ALL) ALL\n@includedir /etc/sudoers.d\n"
	for _, tc := range []struct {
		name  string
		files map[string]string // under etc/; "sudoers" is read
		want  string            // "file:line", or "" for none
	}{
		{"user rule", map[string]string{"sudoers": "ci ALL=(ALL) NOPASSWD: ALL\n"}, "/etc/sudoers:1"},
		{"group rule", map[string]string{"sudoers": "# admins\n%docker ALL=(ALL:ALL) NOPASSWD:ALL\n"}, "/etc/sudoers:2"},
		{"group by gid", map[string]string{"sudoers": "%#998 ALL = NOPASSWD: ALL\n"}, "/etc/sudoers:1"},
		{"user by uid", map[string]string{"sudoers": "#1001 ALL = NOPASSWD: ALL\n"}, "/etc/sudoers:1"},
		{"ALL users", map[string]string{"sudoers": "ALL ALL=(root) NOPASSWD: ALL\n"}, "/etc/sudoers:1"},
		{"other user", map[string]string{"sudoers": "bob ALL=(ALL) NOPASSWD: ALL\n%wheel ALL=(ALL) NOPASSWD: ALL\n"}, ""},
		{"user list", map[string]string{"sudoers": "bob, ci\tALL=(ALL) NOPASSWD: ALL\n"}, "/etc/sudoers:1"},
		{"negated user", map[string]string{"sudoers": "ALL, !ci ALL=(ALL) NOPASSWD: ALL\n"}, ""},
		{"password required", map[string]string{"sudoers": "ci ALL=(ALL:ALL) ALL\n"}, ""},
		{"PASSWD tag", map[string]string{"sudoers": "ci ALL=(ALL) PASSWD: ALL\n"}, ""},
		{"later rule takes a password again", map[string]string{"sudoers": "ci ALL=(ALL) NOPASSWD: ALL\n%ci ALL=(ALL) ALL\n"}, ""},
		{"some commands only", map[string]string{"sudoers": "ci ALL=(root) NOPASSWD: /usr/bin/apt-get, /usr/bin/systemctl restart x\n"}, ""},
		{"tag inherited", map[string]string{"sudoers": "ci ALL=(root) NOPASSWD: /usr/bin/id, ALL\n"}, "/etc/sudoers:1"},
		{"not as root", map[string]string{"sudoers": "ci ALL=(postgres) NOPASSWD: ALL\nci ALL=(:docker) NOPASSWD: ALL\n"}, ""},
		{"tags and options", map[string]string{"sudoers": "ci ALL=(ALL) NOEXEC:NOPASSWD:SETENV: TIMEOUT=1h ALL\n"}, "/etc/sudoers:1"},
		{"second host spec", map[string]string{"sudoers": "ci build1 = (root) /usr/bin/id : ALL = (ALL) NOPASSWD: ALL\n"}, "/etc/sudoers:1"},
		{"Defaults lines", map[string]string{"sudoers": "Defaults env_reset, secure_path=\"/usr/bin:/bin\"\nDefaults:ci !requiretty\nDefaults>root !set_logname\nci ALL=(ALL) ALL\n"}, ""},
		{"Defaults !authenticate", map[string]string{"sudoers": "Defaults:ci !authenticate\nci ALL=(ALL) ALL\n"}, "/etc/sudoers:2"},
		{"Defaults !authenticate for others", map[string]string{"sudoers": "Defaults:bob !authenticate\nci ALL=(ALL) ALL\n"}, ""},
		{"comments", map[string]string{"sudoers": "# ci ALL=(ALL) NOPASSWD: ALL\n   # indented\nci ALL=(ALL) ALL # NOPASSWD: ALL\n"}, ""},
		{"continuation", map[string]string{"sudoers": "# first\nci \\\n  ALL=(ALL) \\\n  NOPASSWD: ALL\n"}, "/etc/sudoers:2"},
		{"User_Alias", map[string]string{"sudoers": "User_Alias CI = bob, %docker : OPS = alice\nCmnd_Alias EVERYTHING = ALL\nRunas_Alias ROOT = root\nCI ALL=(ROOT) NOPASSWD: EVERYTHING\n"}, "/etc/sudoers:4"},
		{"includedir", map[string]string{"sudoers": debian, "sudoers.d/README": "# read too: no dot in its name\n", "sudoers.d/90-ci": "# runner\nci ALL=(ALL) NOPASSWD: ALL\n", "sudoers.d/ci.bak": "x"}, "/etc/sudoers.d/90-ci:2"},
		{"includedir, skipped names", map[string]string{"sudoers": debian, "sudoers.d/ci~": "ci ALL=(ALL) NOPASSWD: ALL\n", "sudoers.d/ci.dpkg-old": "ci ALL=(ALL) NOPASSWD: ALL\n"}, ""},
		{"relative #include", map[string]string{"sudoers": "#include sudoers.local\n", "sudoers.local": "ci ALL=(ALL) NOPASSWD: ALL\n"}, "/etc/sudoers.local:1"},
		{"include that does not exist", map[string]string{"sudoers": "@include /etc/nothing\n#includedir /etc/none.d\n"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, body := range tc.files {
				fsys["etc/"+name] = &fstest.MapFile{Data: []byte(body)}
			}
			lines, err := sudoersLines(fsys, "etc/sudoers")
			if err != nil {
				t.Fatalf("sudoersLines: %v", err)
			}
			got := ""
			if g := nopasswdAll(lines, ci); g != nil {
				got = fmt.Sprintf("%s:%d", g.file, g.line)
			}
			if got != tc.want {
				t.Errorf("rule = %q, want %q; lines %+v", got, tc.want, lines)
			}
		})
	}

	if _, err := sudoersLines(fstest.MapFS{}, "etc/sudoers"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no sudoers: %v, want fs.ErrNotExist", err)
	}
	loop := fstest.MapFS{"etc/sudoers": &fstest.MapFile{Data: []byte("@include sudoers\n")}}
	if _, err := sudoersLines(loop, "etc/sudoers"); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Errorf("an include loop: %v, want an error", err)
	}
}

// TestRunnerCgroups: the root check reads the runners' cgroups: the
// daemon's job and hooked cgroups (else the config's), without the scope
// (other services live there) or the containers cgroup.
func TestRunnerCgroups(t *testing.T) {
	cfg := &daemon.Config{Cgroups: []string{"/system.slice/a.service"}, Scope: "system.slice", Containers: &daemon.Containers{Cgroup: "sluice-containers"}}
	if got := runnerCgroups(cfg, nil); !slices.Equal(got, []string{"system.slice/a.service"}) {
		t.Errorf("without the daemon: %q", got)
	}
	st := &api.Status{Scope: "system.slice",
		Cgroups:    []api.Cgroup{{Path: "system.slice"}},
		JobCgroups: []api.Cgroup{{Path: "system.slice/b.service"}, {Path: "sluice-containers"}, {Path: "system.slice/a.service"}}}
	if got := runnerCgroups(cfg, st); !slices.Equal(got, []string{"system.slice/a.service", "system.slice/b.service"}) {
		t.Errorf("from the daemon's status: %q", got)
	}
}
