package main

import (
	"os"
	"strings"
	"syscall"
)

// sysmonToken keeps the Go runtime's monitor thread (sysmon) from its
// deep sleep. sysmon sleeps deeply whenever every P is idle, which on a
// proxy waiting between round trips is most of the time, and then every
// system call made through the runtime, and every cgo call, wakes it
// again: a futex wake and two thread switches. The PostgreSQL decoder
// makes one cgo call per statement it has not seen (pg_query's
// normalizer), so at one client that wake-up was about 30 us of the
// proxy's CPU per statement (bench/suite.sh, pgbench -S -M simple -c 1:
// 97 -> 68 us, context switches 4.4 -> 2.0 per transaction). With
// schedtrace set, sysmon never sleeps deeply: it polls every 10 ms when
// idle instead. The interval is the longest the runtime takes (2^31-1 ms,
// about 24.8 days), so the trace it enables prints a "SCHED" line to
// stderr only once the machine has been up that long, and then every
// 24.8 days.
const sysmonToken = "schedtrace=2147483647"

// keepSysmonAwake re-executes the daemon (same pid, same arguments, so
// socket activation's LISTEN_PID still holds) with sysmonToken added to
// GODEBUG, which the runtime reads only at start. In the re-executed
// daemon it takes the token out of the environment again, so that the
// programs it starts (password_command) do not inherit it. A daemon
// whose GODEBUG already sets schedtrace is left as it is, and a failed
// re-exec only costs the optimisation.
func keepSysmonAwake() {
	reexecuted := os.Getenv(reexecMarker) != ""
	os.Unsetenv(reexecMarker)
	godebug, set := os.LookupEnv("GODEBUG")
	entries := strings.Split(godebug, ",")
	for i, e := range entries {
		if e == sysmonToken {
			entries = append(entries[:i], entries[i+1:]...)
			if rest := strings.Join(entries, ","); rest != "" {
				os.Setenv("GODEBUG", rest)
			} else {
				os.Unsetenv("GODEBUG")
			}
			return
		}
		if strings.HasPrefix(e, "schedtrace=") {
			return // the operator's own setting
		}
	}
	if reexecuted {
		return // GODEBUG lost the token on the way: never loop
	}
	value := sysmonToken
	if set && godebug != "" {
		value = godebug + "," + sysmonToken
	}
	env := []string{"GODEBUG=" + value, reexecMarker + "=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GODEBUG=") {
			env = append(env, kv)
		}
	}
	syscall.Exec("/proc/self/exe", os.Args, env)
}

// reexecMarker is in the environment of the re-executed daemon only, so
// that it re-executes at most once.
const reexecMarker = "SLUICED_REEXECUTED"
