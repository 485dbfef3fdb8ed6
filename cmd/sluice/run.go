package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/interceptor"
)

func newRunCmd() *cobra.Command {
	var cgroup string
	cmd := &cobra.Command{
		Use:   "run --cgroup PATH [flags] [--] CMD [ARGS...]",
		Short: "Run a command inside a cgroup (created if missing, removed after)",
		Long: `Run CMD inside the cgroup PATH (relative to the cgroup2 mount), as a CI job
would run inside its runner's cgroup: when sluiced hooks that cgroup, CMD's
connections to the ruleset's targets go through Sluice.

CMD starts directly inside the cgroup: not one instruction of it runs
outside. Flags after CMD (or after --) are CMD's own. A cgroup that run
creates is removed when CMD exits; one that existed before is left alone.
If CMD left processes running in it, the cgroup stays and run says so.
The exit status is CMD's (128+N when a signal N ended it).`,
		Example: `  sluice run --cgroup system.slice/actions.runner.acme-api.r1.service -- psql -h db.internal -c 'select 1'
  sluice run --cgroup ci-test psql -h db.internal -c 'select 1'`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageErrorf("missing CMD: give the command to run after the flags (sluice run --cgroup PATH -- CMD [ARGS...])")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if cgroup == "" {
				return usageErrorf("--cgroup is required: the cgroup to run CMD in, relative to the cgroup2 mount")
			}
			code := runInCgroup(cgroup, args, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if code == 0 {
				return nil
			}
			return exitStatus(code)
		},
	}
	// CMD's own flags are not ours: parsing stops at CMD.
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringVar(&cgroup, "cgroup", "", "run in the cgroup at `PATH`, relative to the cgroup2 mount (required)")
	return cmd
}

// runInCgroup runs argv inside the cgroup rel and returns the exit status
// to end with: argv's own, 128+N when signal N ended it, 127 when it could
// not start, 1 when the cgroup could not be prepared. The child is created
// directly inside the cgroup (clone3 with CLONE_INTO_CGROUP). Directories
// of the cgroup path that did not exist are created and removed again
// when argv exits.
func runInCgroup(rel string, argv []string, stdout, stderr io.Writer) int {
	mount, err := interceptor.Cgroup2Mount()
	if err != nil {
		fmt.Fprintln(stderr, "sluice run: no cgroup2 file system is mounted on this machine: sluice run needs the unified hierarchy")
		return 1
	}
	dir, err := interceptor.CgroupPath(mount, rel)
	if err != nil {
		fmt.Fprintf(stderr, "sluice run: --cgroup %q: %v\n", rel, err)
		return 1
	}
	created, err := makeCgroup(mount, dir)
	defer removeCgroups(created, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "sluice run: create cgroup %s: %v\n", dir, errText(err))
		return 1
	}
	cgf, err := os.Open(dir)
	if err != nil {
		fmt.Fprintf(stderr, "sluice run: open cgroup %s: %v\n", dir, errText(err))
		return 1
	}
	defer cgf.Close()

	c := exec.Command(argv[0], argv[1:]...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, stdout, stderr
	c.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cgf.Fd())}
	// Stay alive until the child is gone, so the cgroup can be removed:
	// a terminal's ^C and ^\ reach the child through its process group;
	// SIGTERM and SIGHUP sent to sluice run are passed on to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGQUIT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := c.Start(); err != nil {
		fmt.Fprintf(stderr, "sluice run: start %s: %v\n", argv[0], errText(err))
		return 127
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGTERM || s == syscall.SIGHUP {
					c.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	err = c.Wait()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	fmt.Fprintf(stderr, "sluice run: %v\n", err)
	return 1
}

// makeCgroup creates dir and every missing directory between it and
// mount, and returns the ones it created, deepest last.
func makeCgroup(mount, dir string) ([]string, error) {
	var missing []string
	for d := dir; d != mount && len(d) > len(mount); d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return created, err
		} else if err == nil {
			created = append(created, missing[i])
		}
	}
	return created, nil
}

// removeCgroups removes the cgroups run created, deepest first. A cgroup
// that still holds processes (the command left children behind) stays,
// and one line on stderr names it.
func removeCgroups(created []string, stderr io.Writer) {
	for i := len(created) - 1; i >= 0; i-- {
		dir := created[i]
		err := os.Remove(dir)
		// The kernel may count a just-reaped child for a moment longer.
		for try := 0; errors.Is(err, syscall.EBUSY) && try < 20 && cgroupProcs(dir) == 0; try++ {
			time.Sleep(5 * time.Millisecond)
			err = os.Remove(dir)
		}
		switch {
		case err == nil, errors.Is(err, os.ErrNotExist):
			continue
		case errors.Is(err, syscall.EBUSY) && cgroupProcs(dir) > 0:
			n, what := cgroupProcs(dir), "processes the command left behind still run"
			if n == 1 {
				what = "process the command left behind still runs"
			}
			fmt.Fprintf(stderr, "sluice run: cgroup %s stays: %d %s in it; remove it with rmdir once they end\n", dir, n, what)
		case errors.Is(err, syscall.EBUSY):
			fmt.Fprintf(stderr, "sluice run: cgroup %s stays: it has child cgroups now; remove it with rmdir once they are gone\n", dir)
		default:
			fmt.Fprintf(stderr, "sluice run: remove cgroup %s: %v\n", dir, errText(err))
		}
		return // its parents are not empty either
	}
}

// cgroupProcs counts the processes in the cgroup directory dir.
func cgroupProcs(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return 0
	}
	return len(strings.Fields(string(b)))
}

// errText is err's innermost cause for a message that already names the
// path or command: "permission denied", not "mkdir /x: permission denied".
func errText(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var ee *exec.Error
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}
