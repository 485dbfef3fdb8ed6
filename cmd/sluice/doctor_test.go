package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
