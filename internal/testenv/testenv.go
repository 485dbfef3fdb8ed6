// Package testenv gives tests the real parts Sluice runs against: a child
// cgroup of their own, a private PostgreSQL started with initdb on a random
// port, test hosts in network namespaces on 198.18.0.0/15, the sluiced
// binary, and a way to run a real command inside the cgroup.
//
// Privileged helpers call RequireRoot first: without root they skip the
// test with the reason, and with SLUICE_E2E=required (CI) they fail it
// instead. Everything a helper creates is removed with t.Cleanup.
package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"testing"
)

// Required reports whether privileged tests must run (SLUICE_E2E=required).
func Required() bool { return os.Getenv("SLUICE_E2E") == "required" }

// RequireRoot skips t unless the test runs as root; under
// SLUICE_E2E=required it fails instead, so CI never passes by skipping.
// Under go test -short it always skips: -short runs no privileged test,
// even as root (CI's race-detector run of the unit tests uses it).
func RequireRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("privileged test (cgroups, eBPF, servers): not run under -short")
	}
	if os.Geteuid() == 0 {
		return
	}
	if Required() {
		t.Fatal("SLUICE_E2E=required but the test is not running as root")
	}
	t.Skip("needs root (cgroups, eBPF, network namespaces); run as root or set SLUICE_E2E=required in CI")
}

// Need fails (SLUICE_E2E=required) or skips t when a precondition is not
// met, with the reason.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if Required() {
		t.Fatal("SLUICE_E2E=required: " + why)
	}
	t.Skip(why)
}

// RandName returns prefix followed by 8 random hex digits.
func RandName(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// FreePort returns a TCP port that was free on host a moment ago.
func FreePort(t testing.TB, host string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("find a free port on %s: %v", host, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
