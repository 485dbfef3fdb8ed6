package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/internal/sshca"
)

// checkSSHCA: the runner's ssh clients must trust the SSH host CA in
// data_dir through knownHosts, or they refuse the host certificates the
// SSH decoder presents. global is the list of global known_hosts files
// ssh reads (nil when unknown); knownHosts must be on it.
func checkSSHCA(cfg *daemon.Config, knownHosts string, global []string) finding {
	f := finding{check: "ssh"}
	path := filepath.Join(cfg.DataDir, sshca.KeyFile)
	key, err := sshca.Load(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f.level, f.detail = levelWarn, fmt.Sprintf("no SSH host CA in %s yet: ssh flows cannot be decoded", cfg.DataDir)
		f.fix = "run sluice install: it creates the CA and adds its @cert-authority line to " + knownHosts
		return f
	case errors.Is(err, fs.ErrPermission):
		f.level, f.detail, f.fix = levelWarn, fmt.Sprintf("cannot read the SSH host CA %s", path), "run sluice doctor as root"
		return f
	case err != nil:
		f.level, f.detail = levelFail, fmt.Sprintf("sluiced refuses the SSH host CA: %v", err)
		f.fix = "correct the file as the message says; sluiced does not start until then"
		return f
	}
	pub := key.Public().(ed25519.PublicKey)
	line := sshca.KnownHostsLine(pub)
	data, err := os.ReadFile(knownHosts)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.level, f.detail = levelWarn, fmt.Sprintf("cannot read %s: %v", knownHosts, err)
		f.fix = "make it readable by every user (mode 0644): ssh clients read it as the user they run as"
		return f
	}
	if !sshca.Trusted(data, pub) {
		f.level = levelWarn
		f.detail = fmt.Sprintf("ssh clients will not trust Sluice's host certificates: %s has no @cert-authority line for the SSH host CA in %s", knownHosts, path)
		if _, change := sshca.AddLine(data, cfg.Name, pub); change == sshca.Replaced {
			f.detail += " (the line sluice install wrote names another CA key, an older one, or was edited)"
		}
		f.fix = fmt.Sprintf("run sluice install or add this line to %s: %s", knownHosts, line)
		return f
	}
	if global != nil && !slices.Contains(global, filepath.Clean(knownHosts)) {
		f.level = levelWarn
		f.detail = fmt.Sprintf("%s trusts the SSH host CA, but ssh reads its global known hosts from %s only", knownHosts, strings.Join(global, " "))
		f.fix = fmt.Sprintf("add %s to GlobalKnownHostsFile in /etc/ssh/ssh_config, or run sluice install --ssh-known-hosts with one of those files", knownHosts)
		return f
	}
	f.level, f.detail = levelOK, fmt.Sprintf("%s trusts the SSH host CA (%s): ssh clients accept Sluice's host certificates", knownHosts, path)
	return f
}

// sshGlobalKnownHosts returns the global known_hosts files the ssh client
// of this host reads, as `ssh -G` resolves its configuration, or nil when
// there is no ssh client or it cannot tell.
func sshGlobalKnownHosts() []string {
	if _, err := exec.LookPath("ssh"); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// -G prints the configuration for the host and exits; the host is
	// never contacted.
	out, err := exec.CommandContext(ctx, "ssh", "-G", "sluice-doctor.invalid").Output()
	if err != nil {
		return nil
	}
	return parseGlobalKnownHosts(string(out))
}

// parseGlobalKnownHosts reads the globalknownhostsfile line of `ssh -G`.
func parseGlobalKnownHosts(out string) []string {
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "globalknownhostsfile "); ok {
			var files []string
			for _, f := range strings.Fields(rest) {
				files = append(files, filepath.Clean(f))
			}
			return files
		}
	}
	return nil
}
