package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/enforcer/store/s3"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/testenv"
)

// killS3 kills the test's versitygw with SIGKILL (kill -9): testenv's S3
// stops with SIGTERM only, so the process group is found by the server's
// --port argument, which names this test's endpoint alone. Stop then
// reaps it, keeping its data for Start.
func killS3(t *testing.T, srv *testenv.S3) {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("--port\x00" + srv.Endpoint + "\x00")
	killed := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte("versitygw")) || !bytes.Contains(cmdline, want) {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
			syscall.Kill(-pid, syscall.SIGKILL)
			killed++
		}
	}
	if killed != 1 {
		t.Fatalf("found %d versitygw process groups on %s to kill, want 1", killed, srv.Endpoint)
	}
	srv.Stop(t)
}

// TestFleetOutageNATSAndS3: the combined case. A daemon with a
// store and an events block records a PostgreSQL session in progress;
// nats-server is killed with SIGKILL, the session's denied statements
// are buffered; versitygw is killed with SIGKILL, the session ends and
// its upload fails and is retried; both servers come back on the same
// data: every event is in the stream exactly once, and the recording and
// its sidecar are in the store and verify (the checkpoint taken while
// the session ran is gone).
func TestFleetOutageNATSAndS3(t *testing.T) {
	cg := testenv.NewCgroup(t)
	n := testenv.StartNATS(t)
	s3srv := testenv.StartS3(t, testenv.S3Options{})
	s3srv.MakeBucket(t, "fleet", true)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg,
		Rules: strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"commands\"", 1),
		Body: `store {
  url        = "s3://fleet/runners"
  endpoint   = "` + s3srv.Endpoint + `"
  insecure   = true
  retention  = "1d"
  checkpoint = "1s"
}
events {
  nats_url = "` + n.URL + `"
  vm       = "vm-o"
}
`,
		Env: []string{"AWS_ACCESS_KEY_ID=" + s3srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3srv.SecretKey}})
	admin(t, pg, "create table t(id int)")
	b, err := s3.Open(s3.Config{URL: "s3://fleet/runners", Endpoint: s3srv.Endpoint, Insecure: true, AccessKey: s3srv.AccessKey, SecretKey: s3srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	status := func() (*api.Events, *api.Uploads) {
		st, err := d.Status()
		if err != nil || st.Events == nil || st.Uploads == nil {
			t.Fatalf("status: %v", err)
		}
		return st.Events, st.Uploads
	}

	// The job's session: psql reads its statements from a pipe, one line
	// at a time.
	args := pg.PsqlArgs("", 0, "")
	args = append(args[:len(args)-2], "-At")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, closeCg := cg.Command(ctx, args[0], args[1:]...)
	defer closeCg()
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(nobody(t)), Gid: uint32(nobody(t))}
	cmd.Env = append(os.Environ(), "HOME=/")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	psqlDone := make(chan error, 1)
	go func() { psqlDone <- cmd.Wait() }()
	fmt.Fprintln(stdin, "SELECT 'step1';")
	testenv.WaitFor(t, 15*time.Second, "the session's start event sent and a checkpoint in the store", func() bool {
		ev, _ := status()
		ids, err := b.Checkpoints(context.Background())
		return ev.Sent >= 1 && ev.Pending == 0 && err == nil && len(ids) == 1
	})

	n.Kill(t)
	fmt.Fprintln(stdin, "DROP TABLE t;")
	fmt.Fprintln(stdin, "DELETE FROM t;")
	testenv.WaitFor(t, 15*time.Second, "the two denials buffered with NATS down", func() bool { ev, _ := status(); return ev.Pending >= 2 })

	killS3(t, s3srv)
	stdin.Close()
	select {
	case err := <-psqlDone:
		if err != nil || strings.Count(out.String(), "denied") != 2 {
			t.Fatalf("psql: %v\n%s", err, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("psql did not end")
	}
	sess := waitSealed(t, d, 1, 10*time.Second)[0]
	testenv.WaitFor(t, 15*time.Second, "the upload failed with the store down and pending", func() bool {
		ev, up := status()
		return up.FailedTries >= 1 && up.Pending == 1 && ev.Pending >= 3
	})

	// Both come back on the same data.
	s3srv.Start(t)
	n.Start(t)
	back := time.Now()
	var evAt, upAt time.Duration
	testenv.WaitFor(t, 60*time.Second, "every buffered event sent and the upload done", func() bool {
		ev, up := status()
		if evAt == 0 && ev.Pending == 0 && ev.Sent >= 4 {
			evAt = time.Since(back)
		}
		if upAt == 0 && up.Pending == 0 && up.Uploaded == 1 {
			upAt = time.Since(back)
		}
		return evAt > 0 && upAt > 0
	})
	t.Logf("after both servers came back: the buffered events were all sent in %v, the pending upload done in %v (upload retry backoff doubling from 1 s)",
		evAt.Round(time.Millisecond), upAt.Round(time.Millisecond))

	// Every event once.
	tail := exec.Command(filepath.Join(testenv.Binaries(t), "sluice"), "events", "tail", "--nats", n.URL, "--since", "1h", "--vm", "vm-o")
	tb, err := tail.CombinedOutput()
	if err != nil {
		t.Fatalf("sluice events tail: %v\n%s", err, tb)
	}
	var types []string
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(tb)), "\n") {
		var e events.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events tail line %q: %v", line, err)
		}
		if seen[e.ID] {
			t.Errorf("event %s in the stream twice", e.ID)
		}
		seen[e.ID] = true
		types = append(types, e.Type+"/"+e.Verdict)
	}
	if want := "session_start/allow statement/deny statement/deny session_end/"; strings.Join(types, " ") != want {
		t.Errorf("the stream holds %q, want %q:\n%s", strings.Join(types, " "), want, tb)
	}

	// The recording and its sidecar, verified; no checkpoint left.
	if vo, err := storeCLI(t, s3srv)("verify", sess.ID, "--store", "s3://fleet/runners", "--store-endpoint", s3srv.Endpoint, "--store-insecure"); err != nil || !strings.Contains(vo, sess.ID+": ok, sealed") {
		t.Errorf("verify --store: %v\n%s", err, vo)
	}
	sc, err := b.Stat(context.Background(), sess.ID)
	if err != nil || sc.Session.Denied != 2 {
		t.Errorf("the sidecar: %+v, %v; want 2 denials", sc, err)
	}
	testenv.WaitFor(t, 5*time.Second, "no checkpoint left", func() bool {
		ids, err := b.Checkpoints(context.Background())
		return err == nil && len(ids) == 0
	})
}
