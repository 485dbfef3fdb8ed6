package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
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
		_, marker := os.LookupEnv(reexecMarker)
		fmt.Printf("pid=%v started=%q inherited=%q set=%v marker=%v\n", pid == os.Getpid(), started, godebug, set, marker)
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
		extra         string
		want          string
	}{
		{"unset", "", false, "", `pid=true started="schedtrace=2147483647" inherited="" set=false marker=false`},
		{"operator entries kept", "madvdontneed=1", true, "", `pid=true started="madvdontneed=1,schedtrace=2147483647" inherited="madvdontneed=1" set=true marker=false`},
		{"operator schedtrace left alone", "schedtrace=5000000", true, "", `pid=true started="schedtrace=5000000" inherited="schedtrace=5000000" set=true marker=false`},
		// A re-executed daemon whose GODEBUG lost the token does not
		// re-execute again.
		{"at most once", "", false, reexecMarker + "=1", `pid=true started="" inherited="" set=false marker=false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A daemon that re-executed itself forever would never end.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
			cmd.Env = []string{sysmonHelper + "=1"}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if tc.set {
				cmd.Env = append(cmd.Env, "GODEBUG="+tc.godebug)
			}
			if tc.extra != "" {
				cmd.Env = append(cmd.Env, tc.extra)
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
