package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// NATS is a real nats-server the test started (built by
// scripts/build-nats.sh), listening on 127.0.0.1 with JetStream on and its
// store in Dir. The store and the port stay across Stop (or Kill) and
// Start, so a test can take the server away and bring it back as it was.
// Everything is stopped and removed at cleanup. A NATS belongs to the test
// that started it.
type NATS struct {
	// URL is nats://127.0.0.1:PORT.
	URL string
	// Dir holds the JetStream store and the log.
	Dir string

	port    int
	bin     string
	process *exec.Cmd
	done    chan struct{}
}

// NATSBin returns the nats-server program: SLUICE_NATS_BIN when set, or
// else scripts/build-nats.sh's cache entry for the version
// internal/testenv/natstools pins. It never builds it:
// scripts/install-deps.sh does (about 40 s on 2 cores).
func NATSBin() (string, error) {
	bin, err := cachedBuild("SLUICE_NATS_BIN", "build-nats.sh", "nats-server is")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("no nats-server at %s: run scripts/build-nats.sh", bin)
	}
	return bin, nil
}

// StartNATS starts nats-server with JetStream and returns once it answers.
// It skips under go test -short and when nats-server is not built
// (NATSBin), unless SLUICE_E2E=required, which fails instead.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	if testing.Short() {
		t.Skip("starts nats-server: not run under -short")
	}
	bin, err := NATSBin()
	Need(t, err == nil, fmt.Sprint(err))
	dir, err := os.MkdirTemp("", "sluice-nats-")
	if err != nil {
		t.Fatal(err)
	}
	n := &NATS{port: FreePort(t, "127.0.0.1"), Dir: dir, bin: bin}
	n.URL = "nats://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port))
	t.Cleanup(func() {
		n.Stop(t)
		os.RemoveAll(dir)
	})
	n.Start(t)
	return n
}

// Start starts the server (again) on its port and store, and waits until
// it accepts connections.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	if n.process != nil {
		t.Fatal("nats-server is already running")
	}
	cmd := exec.Command(n.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(n.port), "-js", "-sd", filepath.Join(n.Dir, "js"))
	n.done = startServer(t, "nats-server", cmd, filepath.Join(n.Dir, "nats-server.log"), net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)))
	n.process = cmd
}

// Stop stops the server (SIGTERM, SIGKILL after 5 s), keeping its store.
// Stopping a stopped server does nothing.
func (n *NATS) Stop(t testing.TB) {
	if n.process == nil {
		return
	}
	stopGroup(n.process, n.done, syscall.SIGTERM, 5*time.Second)
	n.process = nil
}

// Kill kills the server with SIGKILL (kill -9), keeping its store.
func (n *NATS) Kill(t testing.TB) {
	if n.process == nil {
		return
	}
	stopGroup(n.process, n.done, syscall.SIGKILL, 5*time.Second)
	n.process = nil
}
