package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/sluicehq/sluice/interceptor/runners"
)

// hardenDropIn is the name of the drop-in `sluice install --harden` writes
// for each runner service.
const hardenDropIn = "sluice-harden.conf"

// hardenConf takes away from a runner service's jobs what lets a job with
// root escape or attack Sluice. systemd applies it to every process of the
// service, root ones too, and a job cannot lift it: the bounding set and
// no_new_privs are inherited by every child and cannot be raised again.
const hardenConf = `# Written by sluice install --harden: the runner's jobs cannot become root
# or act against Sluice. Remove this file (and systemctl daemon-reload,
# restart the runner) to undo it. See the README, "Jobs with root".
[Service]
# sudo, su and other setuid programs cannot raise privileges.
NoNewPrivileges=yes
# /sys/fs/cgroup is read-only: no process can be moved to another cgroup.
ProtectControlGroups=yes
# No kernel module loads, no writes to kernel tunables.
ProtectKernelModules=yes
ProtectKernelTunables=yes
# Even a root job lacks what bpf(), ptrace of other users' processes,
# module loads and network namespace tricks need.
CapabilityBoundingSet=~CAP_SYS_ADMIN CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_SYS_MODULE CAP_NET_ADMIN CAP_SYS_RAWIO
# Sluice's pins, config, data and control socket are out of reach.
InaccessiblePaths=-/sys/fs/bpf -/etc/sluice -/var/lib/sluice -/run/sluice
`

// installHarden writes the hardening drop-in for each runner unit under
// dir (/etc/systemd/system by default). It reports the drop-ins written.
func installHarden(dir string, found []runners.Runner, dryRun bool, stdout io.Writer) ([]string, error) {
	var written []string
	for _, r := range found {
		p := filepath.Join(dir, r.Unit+".d", hardenDropIn)
		old, err := os.ReadFile(p)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return written, err
		}
		switch {
		case bytes.Equal(old, []byte(hardenConf)):
			fmt.Fprintf(stdout, "harden: %s already in place\n", p)
			continue
		case dryRun:
			fmt.Fprintf(stdout, "would write %s (--dry-run):\n%s", p, hardenConf)
			continue
		}
		if err := writeFileAtomic(p, []byte(hardenConf)); err != nil {
			return written, err
		}
		fmt.Fprintf(stdout, "harden: wrote %s: %s's jobs lose sudo, cgroup moves, bpf(), module loads and access to Sluice's files\n", p, r.Unit)
		written = append(written, p)
	}
	return written, nil
}

// reloadHardened makes systemd read the drop-ins and says what is left to
// do: the runner picks them up when it restarts, which ends its running
// jobs, so install does not restart it.
func reloadHardened(written []string, found []runners.Runner, dir string, stdout, stderr io.Writer) {
	if len(written) == 0 {
		return
	}
	if dir == defaultSystemdDir && systemdRunning() {
		cmd := exec.Command("systemctl", "daemon-reload")
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(stderr, "sluice install: systemctl daemon-reload: %v\n", err)
		}
	}
	for _, r := range found {
		fmt.Fprintf(stdout, "harden: restart %s between jobs for it to apply: systemctl restart %s\n", r.Unit, r.Unit)
	}
}

const defaultSystemdDir = "/etc/systemd/system"
