package main

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/interceptor/runners"
)

// TestMergeInstallConfig: a new file lists the runners and a discover
// block; a second run changes nothing; a new runner is added without
// touching an operator's edits; a templated unit's escaped name survives.
func TestMergeInstallConfig(t *testing.T) {
	gh := runners.Runner{Kind: runners.GitHub, Unit: "actions.runner.acme-api.r1.service", Cgroup: "system.slice/actions.runner.acme-api.r1.service"}
	bk := runners.Runner{Kind: runners.Buildkite, Unit: "buildkite-agent@1.service", Cgroup: `system.slice/system-buildkite\x2dagent.slice/buildkite-agent@1.service`}

	first, err := mergeInstallConfig(nil, "sluiced.hcl", []runners.Runner{gh}, "system.slice", true, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"cgroups = [\n  \"system.slice/actions.runner.acme-api.r1.service\",\n]",
		"discover {\n  root  = \"system.slice\"\n  every = \"30s\"\n}",
		`data_dir   = "/var/lib/sluice"`,
		`api_socket = "/run/sluice/sluiced.sock"`,
	} {
		if !strings.Contains(string(first), want) {
			t.Errorf("new config lacks %q:\n%s", want, first)
		}
	}
	again, err := mergeInstallConfig(first, "sluiced.hcl", []runners.Runner{gh}, "system.slice", false, "")
	if err != nil || string(again) != string(first) {
		t.Errorf("second run changed the file (err %v):\n%s", err, again)
	}

	edited := strings.Replace(string(first), `data_dir   = "/var/lib/sluice"`, "data_dir = \"/srv/sluice\" # ours\nlog {\n  level = \"debug\"\n}", 1)
	edited = strings.Replace(edited, `  "system.slice/actions.runner.acme-api.r1.service",`, "  \"system.slice/actions.runner.acme-api.r1.service\",\n  \"custom.slice/ci.scope\",", 1)
	merged, err := mergeInstallConfig([]byte(edited), "sluiced.hcl", []runners.Runner{gh, bk}, "system.slice", false, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`data_dir = "/srv/sluice" # ours`, `level = "debug"`, `"custom.slice/ci.scope",`, `"system.slice/system-buildkite\\x2dagent.slice/buildkite-agent@1.service",`} {
		if !strings.Contains(string(merged), want) {
			t.Errorf("merged config lacks %q:\n%s", want, merged)
		}
	}
	// The file stays valid HCL and the escaped name reads back unchanged.
	f, diags := hclsyntax.ParseConfig(merged, "sluiced.hcl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("merged config does not parse: %v\n%s", diags, merged)
	}
	v, _ := f.Body.(*hclsyntax.Body).Attributes["cgroups"].Expr.Value(nil)
	if n := v.LengthInt(); n != 3 || v.Index(cty.NumberIntVal(2)).AsString() != bk.Cgroup {
		t.Errorf("cgroups read back as %#v, want gh, custom, buildkite", v)
	}

	if _, err := mergeInstallConfig([]byte("cgroups = [\n"), "sluiced.hcl", []runners.Runner{gh}, "system.slice", false, ""); err == nil || !strings.Contains(err.Error(), "not valid HCL") {
		t.Errorf("broken file: err %v, want it refused", err)
	}
}

// TestInstallContainers: install sets Docker's cgroup-parent beside the
// settings already in daemon.json, refuses to replace one an operator
// chose, and adds a containers block hooking that parent, which sluiced's
// config accepts; a second run changes neither file.
func TestInstallContainers(t *testing.T) {
	dir := t.TempDir()
	dc := filepath.Join(dir, "docker", "daemon.json")
	os.MkdirAll(filepath.Dir(dc), 0o755)
	os.WriteFile(dc, []byte(`{"log-driver": "journald", "exec-opts": ["native.cgroupdriver=systemd"]}`), 0o644)
	var out, errb strings.Builder
	cg, err := installContainers("on", dc, "auto", false, &out, &errb)
	if err != nil || cg != "sluice.slice/sluice-containers.slice" {
		t.Fatalf("installContainers = %q, %v; want the systemd slice (exec-opts names the systemd driver)", cg, err)
	}
	var conf map[string]any
	b, _ := os.ReadFile(dc)
	if err := json.Unmarshal(b, &conf); err != nil || conf["cgroup-parent"] != "sluice-containers.slice" || conf["log-driver"] != "journald" {
		t.Fatalf("daemon.json = %s (%v): want cgroup-parent set and log-driver kept", b, err)
	}
	out.Reset()
	if _, err := installContainers("on", dc, "auto", false, &out, &errb); err != nil || !strings.Contains(out.String(), "already") {
		t.Errorf("second run: %v, %q; want daemon.json left as it is", err, out.String())
	}

	os.WriteFile(dc, []byte(`{"cgroup-parent": "/elsewhere"}`), 0o644)
	if _, err := installContainers("on", dc, "cgroupfs", false, &out, &errb); err == nil || !strings.Contains(err.Error(), `cgroup-parent "/elsewhere" already`) {
		t.Errorf("an operator's cgroup-parent: err %v, want a refusal naming it", err)
	}
	if cg, err := installContainers("off", dc, "cgroupfs", false, &out, &errb); cg != "" || err != nil {
		t.Errorf("--containers off = %q, %v", cg, err)
	}

	gh := runners.Runner{Kind: runners.GitHub, Unit: "actions.runner.acme-api.r1.service", Cgroup: "system.slice/actions.runner.acme-api.r1.service"}
	first, err := mergeInstallConfig(nil, "sluiced.hcl", []runners.Runner{gh}, "system.slice", true, "sluice-containers")
	if err != nil {
		t.Fatal(err)
	}
	c, diags, _ := daemon.ParseConfig("sluiced.hcl", first)
	if diags.HasErrors() || c.Containers == nil || c.Containers.Cgroup != "sluice-containers" || !c.Containers.Kill {
		t.Fatalf("installed config:\n%s\nparses to %+v, %v; want a containers block hooking sluice-containers, killing what is outside", first, c.Containers, diags)
	}
	if !slices.Contains(c.Cgroups, "sluice-containers") {
		t.Errorf("hooked cgroups %q lack the containers cgroup", c.Cgroups)
	}
	again, _ := mergeInstallConfig(first, "sluiced.hcl", []runners.Runner{gh}, "system.slice", false, "sluice-containers")
	if string(again) != string(first) {
		t.Errorf("second merge changed the config:\n%s", again)
	}
}

// TestInstallHarden: --harden writes one drop-in per runner unit, which
// names every protection, and leaves it alone on a second run.
func TestInstallHarden(t *testing.T) {
	dir := t.TempDir()
	found := []runners.Runner{{Kind: runners.GitHub, Unit: "actions.runner.acme-api.r1.service"}, {Kind: runners.GitLab, Unit: "gitlab-runner.service"}}
	var out strings.Builder
	written, err := installHarden(dir, found, false, &out)
	if err != nil || len(written) != 2 {
		t.Fatalf("installHarden = %v, %v; want two drop-ins", written, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "gitlab-runner.service.d", hardenDropIn))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NoNewPrivileges=yes", "ProtectControlGroups=yes", "ProtectKernelModules=yes", "CAP_BPF", "CAP_SYS_PTRACE", "InaccessiblePaths=-/sys/fs/bpf -/etc/sluice"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("drop-in lacks %q:\n%s", want, b)
		}
	}
	out.Reset()
	if written, err := installHarden(dir, found, false, &out); err != nil || len(written) != 0 || strings.Count(out.String(), "already in place") != 2 {
		t.Errorf("second run wrote %v (%v):\n%s", written, err, out.String())
	}
}

// TestHardenDropInVerifies: systemd reads every line of the drop-in (an
// unknown or misspelled key would be ignored, silently leaving the runner
// unhardened) and applies the capability bounding set.
func TestHardenDropInVerifies(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("no systemd-analyze (make deps installs it)")
	}
	dir := t.TempDir()
	unit := filepath.Join(dir, "fake-runner.service")
	os.WriteFile(unit, []byte("[Unit]\nDescription=runner\n[Service]\nExecStart=/bin/true\n"), 0o644)
	if _, err := installHarden(dir, []runners.Runner{{Unit: "fake-runner.service"}}, false, io.Discard); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-analyze", "verify", "--man=no", unit)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=debug")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "DropIn Path: "+filepath.Join(dir, "fake-runner.service.d", hardenDropIn)) {
		t.Fatalf("systemd did not read the drop-in:\n%s", out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, hardenDropIn+":") {
			t.Errorf("systemd complains about the drop-in: %s", l)
		}
	}
	var bounding string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "CapabilityBoundingSet:") {
			bounding = l
		}
	}
	if bounding == "" || strings.Contains(bounding, "cap_sys_admin") || strings.Contains(bounding, "cap_bpf") || strings.Contains(bounding, "cap_sys_ptrace") {
		t.Errorf("bounding set %q still holds what the drop-in removes", bounding)
	}
}
