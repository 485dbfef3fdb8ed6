package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// AsciinemaCat runs `asciinema cat file` (Debian's asciinema 2.2) and
// returns what it printed: the output events of an asciicast recording,
// concatenated, as a terminal would be sent them. An error carries
// asciinema's own message, such as a file it cannot load. Without
// asciinema installed it skips t, or fails it under SLUICE_E2E=required.
//
// asciinema cat insists on a controlling terminal (it opens /dev/tty to
// put it in raw mode), which a test has not: AsciinemaCat gives it a
// pseudo-terminal of its own as that terminal, and reads its standard
// output from a pipe.
func AsciinemaCat(t testing.TB, file string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("asciinema")
	Need(t, err == nil, "asciinema is not installed (scripts/install-deps.sh)")
	ptm, pts, err := openPTY()
	if err != nil {
		t.Fatalf("open a pseudo-terminal for asciinema: %v", err)
	}
	defer ptm.Close()
	// Whatever reaches the terminal is drained, so asciinema never blocks
	// on it; the read ends (EIO) once the terminal has no process left.
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, ptm); close(drained) }()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "cat", file)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, &stdout, &stderr
	// A session of its own, with the terminal (its stdin, fd 0) as the
	// controlling terminal that /dev/tty then opens.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	err = cmd.Start()
	pts.Close()
	if err != nil {
		t.Fatalf("start asciinema: %v", err)
	}
	err = cmd.Wait()
	<-drained
	if err != nil {
		return stdout.String(), fmt.Errorf("asciinema cat %s: %w: %s", file, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// openPTY opens a new pseudo-terminal pair: the master, and the slave
// (not made this process's controlling terminal).
func openPTY() (ptm, pts *os.File, err error) {
	ptm, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(ptm.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		ptm.Close()
		return nil, nil, fmt.Errorf("pty number: %w", err)
	}
	pts, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		return nil, nil, err
	}
	return ptm, pts, nil
}
