package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// sysmonHelper, set in a child's environment, makes the test binary act as
// the daemon's start: keepSysmonAwake, then report what it got.
const sysmonHelper = "SLUICE_TEST_SYSMON_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(sysmonHelper) != "" {
		pid := os.Getpid()
		keepSysmonAwake()
		// What the runtime read at start is what the process was
		// executed with: /proc/self/environ. What children inherit is
		// os.Environ.
		raw, _ := os.ReadFile("/proc/self/environ")
		var started string
		for _, kv := range bytes.Split(raw, []byte{0}) {
			if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
				started = v
			}
		}
		godebug, set := os.LookupEnv("GODEBUG")
		fmt.Printf("pid=%v started=%q inherited=%q set=%v\n", pid == os.Getpid(), started, godebug, set)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestKeepSysmonAwake: the daemon re-executes itself once, as the same
// process, with schedtrace in the GODEBUG the runtime reads; the
// programs it starts do not inherit the setting, the operator's own
// GODEBUG entries are kept, and an operator's schedtrace is left alone.
func TestKeepSysmonAwake(t *testing.T) {
	for _, tc := range []struct {
		name, godebug string
		set           bool
		want          string
	}{
		{"unset", "", false, `pid=true started="schedtrace=2147483647" inherited="" set=false`},
		{"operator entries kept", "madvdontneed=1", true, `pid=true started="madvdontneed=1,schedtrace=2147483647" inherited="madvdontneed=1" set=true`},
		{"operator schedtrace left alone", "schedtrace=5000000", true, `pid=true started="schedtrace=5000000" inherited="schedtrace=5000000" set=true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = []string{sysmonHelper + "=1"}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if tc.set {
				cmd.Env = append(cmd.Env, "GODEBUG="+tc.godebug)
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
