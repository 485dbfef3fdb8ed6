package record

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const crashChildEnv = "SLUICE_RECORD_CRASH_CHILD"

// flushedBeforeKill is how many statements the child records and flushes
// before it tells the parent to kill it.
const flushedBeforeKill = 100

// TestCrashChild is the child of TestKillMidSession: it records into the
// directory named by crashChildEnv until it is killed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashChildEnv)
	if dir == "" {
		t.Skip("runs only as TestKillMidSession's child")
	}
	w, err := Create(dir, "crash", testKeys(1), Options{QueueLen: 64, FsyncEvery: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range flushedBeforeKill {
		if err := w.Append(ctx, Event{Type: TypeStatement, Kind: "select", Text: "SELECT " + strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("flushed")
	// Large wire events, so the kill is likely to land inside a frame.
	data := bytes.Repeat([]byte("wire"), 40<<10)
	for i := 0; ; i++ {
		if err := w.Append(ctx, Event{Type: TypeWire, Dir: DirServerToClient, Data: data, Rows: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestKillMidSession kills a recording process with SIGKILL while it is
// writing: the recording verifies as interrupted and holds every event
// flushed before the kill.
func TestKillMidSession(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "flushed\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}
	// Let it write (and checkpoint) for a while, then kill it mid-stream.
	path := ""
	for deadline := time.Now().Add(time.Minute); path == "" || fileSize(path) < 8<<20; {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the child wrote only %d bytes in a minute", fileSize(path))
		}
		time.Sleep(time.Millisecond)
		path, _ = Find(dir, "crash")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	res, err := Verify(path, testKeys(1).PublicKey())
	if err != nil {
		t.Fatalf("Verify after SIGKILL: %v", err)
	}
	if res.Status != StatusInterrupted {
		t.Fatalf("status %v, want interrupted", res.Status)
	}
	rec, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	evs := rec.Events()
	if len(evs) < flushedBeforeKill {
		t.Fatalf("%d events recovered, want at least the %d flushed", len(evs), flushedBeforeKill)
	}
	for i, e := range evs[:flushedBeforeKill] {
		if e.Text != "SELECT "+strconv.Itoa(i) {
			t.Fatalf("event %d is %+v", i, e)
		}
	}
	for i, e := range evs[flushedBeforeKill:] {
		if e.Type != TypeWire || e.Rows != int64(i) {
			t.Fatalf("wire event %d is %s rows %d", i, e.Type, e.Rows)
		}
	}
	if res.SignedThrough == 0 {
		t.Error("no checkpoint verified")
	}
	t.Logf("%d bytes: %d events, signed through frame %d of %d, %d torn bytes", res.Size, res.Events, res.SignedThrough, res.Frames-1, res.TornBytes)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
