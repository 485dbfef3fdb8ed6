package testenv

import (
	"testing"
	"time"
)

// WaitFor polls cond every 20 ms until it holds, and fails t (naming what)
// if it does not within d. It is how a test waits for something another
// process does, instead of sleeping.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
