package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// Container jobs: `sluice install` points Docker's cgroup parent at a
// cgroup sluiced hooks, so every container the runtime starts is
// intercepted from its first connect.
const (
	defaultDockerConfig = "/etc/docker/daemon.json"
	// containersCgroupfs is the cgroup parent with Docker's cgroupfs
	// driver, and the hooked path (relative to the cgroup2 mount).
	containersCgroupfs = "/sluice-containers"
	// containersSlice is the parent with the systemd driver; systemd puts
	// a-b.slice inside a.slice.
	containersSlice = "sluice-containers.slice"
)

// containerParent returns Docker's cgroup-parent for driver and the cgroup
// sluiced hooks for it.
func containerParent(driver string) (parent, hooked string) {
	if driver == "systemd" {
		return containersSlice, "sluice.slice/" + containersSlice
	}
	return containersCgroupfs, strings.TrimPrefix(containersCgroupfs, "/")
}

// dockerInstalled reports whether this host has a Docker daemon to set up.
func dockerInstalled() bool {
	if _, err := exec.LookPath("dockerd"); err == nil {
		return true
	}
	_, err := os.Stat("/etc/docker")
	return err == nil
}

// cgroupDriver returns the cgroup driver Docker uses with conf (its
// daemon.json): the one exec-opts names, else Docker's default, systemd on
// a cgroup v2-only host run by systemd and cgroupfs otherwise.
func cgroupDriver(conf map[string]json.RawMessage) string {
	var opts []string
	json.Unmarshal(conf["exec-opts"], &opts)
	for _, o := range opts {
		if v, ok := strings.CutPrefix(o, "native.cgroupdriver="); ok {
			return v
		}
	}
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil && systemdRunning() {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) > 9 && f[4] == "/sys/fs/cgroup" && slices.Contains(f, "cgroup2") {
				return "systemd"
			}
		}
	}
	return "cgroupfs"
}

// mergeDockerConfig returns daemon.json with cgroup-parent set to parent,
// every other setting kept. It refuses to replace a cgroup-parent the
// operator chose.
func mergeDockerConfig(old []byte, path, parent string) ([]byte, error) {
	conf := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(old)) > 0 {
		if err := json.Unmarshal(old, &conf); err != nil {
			return nil, fmt.Errorf("%s is not a JSON object (%v); fix it, then run install again", path, err)
		}
	}
	if raw, ok := conf["cgroup-parent"]; ok {
		var cur string
		json.Unmarshal(raw, &cur)
		if cur == parent {
			return old, nil
		}
		return nil, fmt.Errorf("%s sets cgroup-parent %q already: containers there would not be intercepted. Set it to %q (or remove it and run install again), then restart dockerd", path, cur, parent)
	}
	v, _ := json.Marshal(parent)
	conf["cgroup-parent"] = v
	out, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// installContainers sets Docker's cgroup parent in dockerConfig and
// returns the cgroup sluiced must hook, or "" when the host has no Docker
// (mode auto) or mode is off.
func installContainers(mode, dockerConfig, driver string, dryRun bool, stdout, stderr io.Writer) (string, error) {
	switch mode {
	case "off":
		return "", nil
	case "auto":
		if !dockerInstalled() {
			return "", nil
		}
	case "on":
	default:
		return "", fmt.Errorf("--containers %q: use auto, on or off", mode)
	}
	old, err := os.ReadFile(dockerConfig)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	conf := map[string]json.RawMessage{}
	json.Unmarshal(old, &conf)
	if driver == "" || driver == "auto" {
		driver = cgroupDriver(conf)
	}
	if driver != "systemd" && driver != "cgroupfs" {
		return "", fmt.Errorf("--cgroup-driver %q: use auto, systemd or cgroupfs", driver)
	}
	parent, hooked := containerParent(driver)
	next, err := mergeDockerConfig(old, dockerConfig, parent)
	if err != nil {
		return "", err
	}
	switch {
	case bytes.Equal(old, next):
		fmt.Fprintf(stdout, "docker: %s already puts containers under %s\n", dockerConfig, parent)
	case dryRun:
		fmt.Fprintf(stdout, "would write %s (--dry-run):\n%s", dockerConfig, next)
	default:
		if err := writeFileAtomic(dockerConfig, next); err != nil {
			return "", err
		}
		fmt.Fprintf(stdout, "docker: wrote cgroup-parent %q (%s driver) to %s\n", parent, driver, dockerConfig)
		fmt.Fprintln(stdout, "docker: restart dockerd for it to apply (systemctl restart docker). Containers running before that are outside the hooked cgroup: sluiced kills them when it finds them.")
	}
	return hooked, nil
}

// mergeContainersBlock adds a containers block for cgroup to the config
// when it has none. It reports whether it changed anything.
func mergeContainersBlock(f *hclwrite.File, parsed *hclsyntax.Body, cgroup string) bool {
	if cgroup == "" {
		return false
	}
	for _, b := range parsed.Blocks {
		if b.Type == "containers" {
			return false
		}
	}
	f.Body().AppendNewline()
	f.Body().AppendUnstructuredTokens(hclwrite.Tokens{{Type: hclsyntax.TokenComment, Bytes: []byte("# Container jobs: Docker's cgroup-parent (set in /etc/docker/daemon.json by\n# sluice install) is hooked, so containers' connects are intercepted too.\n")}})
	b := f.Body().AppendNewBlock("containers", nil)
	b.Body().SetAttributeValue("cgroup", cty.StringVal(cgroup))
	return true
}
