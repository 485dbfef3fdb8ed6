package testenv

import (
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// startServer starts cmd, a server of the test's, in a process group of
// its own (killed with the test binary), with its output appended to
// logPath, and returns once it accepts connections on addr: within 20 s,
// or the test fails with the log. done is closed once cmd was waited for;
// stopGroup stops it.
func startServer(t testing.TB, name string, cmd *exec.Cmd, logPath, addr string) (done chan struct{}) {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done = make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return done
		}
		select {
		case <-done:
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s exited at start:\n%s", name, log)
		default:
		}
		if time.Now().After(deadline) {
			stopGroup(cmd, done, syscall.SIGKILL, 5*time.Second)
			t.Fatalf("%s did not listen on %s within 20s", name, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
