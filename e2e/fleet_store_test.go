package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/enforcer/store/s3"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestStoreFleetKey: a daemon with a fleet signing key publishes its
// recording key, endorsed, to keys/VM/ in the store at start and names
// its VM in each sidecar; sluice verify --store --fleet-pub accepts its
// recordings and reports FORGED (exit 1) a recording a forger with write
// access to the bucket uploaded under the same VM name, signed with a
// key of their own.
func TestStoreFleetKey(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s3srv := testenv.StartS3(t, testenv.S3Options{})
	s3srv.MakeBucket(t, "fleet", true)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	dir := t.TempDir()
	cli := storeCLI(t, s3srv)
	if out, err := cli("rules", "keygen", "--out", filepath.Join(dir, "fleet")); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: `store {
  url            = "s3://fleet/runners"
  endpoint       = "` + s3srv.Endpoint + `"
  insecure       = true
  retention      = "1d"
  vm             = "runner-7"
  fleet_key_file = "` + filepath.Join(dir, "fleet.key") + `"
}
`,
		Env: []string{"AWS_ACCESS_KEY_ID=" + s3srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3srv.SecretKey}})
	pub := d.WaitLog(t, "recording key published to the store, endorsed by the fleet key", nil)
	if pub.String("vm") != "runner-7" || pub.String("new") != "true" {
		t.Errorf("key publication logged as %v", pub)
	}
	if out, _, err := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "SELECT 1")); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	sess := waitSealed(t, d, 1, 10*time.Second)[0]
	d.WaitLog(t, "recording uploaded", func(l testenv.LogLine) bool { return l.String("session") == sess.ID })

	// A restart publishes nothing new: the endorsement is there.
	d.Stop(t)
	d.Start(t)
	testenv.WaitFor(t, 10*time.Second, "the key checked again at the restart", func() bool {
		n := 0
		for _, l := range d.Logs(t) {
			if l.Message() == "recording key published to the store, endorsed by the fleet key" {
				n++
				if n == 2 && l.String("new") != "false" {
					t.Fatalf("the restart wrote the endorsement again: %v", l)
				}
			}
		}
		return n == 2
	})
	d.Stop(t)

	// A forger with write access to the bucket but not the fleet key.
	_, fpriv, _ := ed25519.GenerateKey(rand.Reader)
	fkeys := record.NewKeys(fpriv)
	id := time.Now().UTC().Format("20060102T150405.000Z") + "-f0f0f0f0"
	w, err := record.Create(dir, id, fkeys, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, e := range []record.Event{{Type: record.TypeSessionStart}, {Type: record.TypeStatement, Text: "SELECT innocent()", Verdict: "allow"}, {Type: record.TypeSessionEnd}} {
		if err := w.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fb, err := s3.Open(s3.Config{URL: "s3://fleet/runners", Endpoint: s3srv.Endpoint, Insecure: true, AccessKey: s3srv.AccessKey, SecretKey: s3srv.SecretKey, VM: "runner-7"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fb.Put(ctx, &store.Session{ID: id, Path: w.Path(), Start: time.Now(), End: time.Now(), Status: store.StatusSealed, Target: "pg"}, fkeys.PublicKey()); err != nil {
		t.Fatal(err)
	}

	at := []string{"--store", "s3://fleet/runners", "--store-endpoint", s3srv.Endpoint, "--store-insecure"}
	// Without the fleet key both pass: each is signed by the key its
	// sidecar names.
	if out, err := cli(append([]string{"verify", "--all"}, at...)...); err != nil || strings.Count(out, ": ok, sealed") != 2 {
		t.Errorf("verify --all without --fleet-pub: %v\n%s", err, out)
	}
	start := time.Now()
	out, err := cli(append([]string{"verify", "--all", "--fleet-pub", filepath.Join(dir, "fleet.pub")}, at...)...)
	t.Logf("verify --fleet-pub of 2 recordings took %v:\n%s", time.Since(start).Round(time.Millisecond), out)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("verify --fleet-pub with a forged recording: exit %v, want 1", err)
	}
	for _, want := range []string{
		sess.ID + ": ok, sealed",
		"vm runner-7's key, endorsed by fleet key",
		id + ": FORGED: key " + record.KeyID(fkeys.PublicKey())[:16] + " is not published for vm \"runner-7\"",
		"1 of 2 recordings failed verification",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify --fleet-pub output lacks %q", want)
		}
	}
	if out, err := cli(append([]string{"verify", sess.ID, "--fleet-pub", filepath.Join(dir, "fleet.pub")}, at...)...); err != nil {
		t.Errorf("verify --fleet-pub of the genuine recording: %v\n%s", err, out)
	}
	out, err = cli(append([]string{"sessions", "list", "--fleet-pub", filepath.Join(dir, "fleet.pub")}, at...)...)
	if err != nil {
		t.Fatalf("sessions list --fleet-pub: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(l, sess.ID) && !strings.HasSuffix(strings.TrimSpace(l), "vm runner-7"),
			strings.HasPrefix(l, id) && !strings.HasSuffix(strings.TrimSpace(l), "FORGED"):
			t.Errorf("sessions list --fleet-pub line %q", l)
		}
	}
	out, err = cli(append([]string{"sessions", "show", id, "--fleet-pub", filepath.Join(dir, "fleet.pub")}, at...)...)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, "key       FORGED: ") {
		t.Errorf("sessions show --fleet-pub of the forged recording: %v\n%s", err, out)
	}
	if out, err := cli(append([]string{"sessions", "show", sess.ID, "--fleet-pub", filepath.Join(dir, "fleet.pub")}, at...)...); err != nil || !strings.Contains(out, "key       vm runner-7's key, endorsed by fleet key") {
		t.Errorf("sessions show --fleet-pub of the genuine recording: %v\n%s", err, out)
	}
}

// TestStoreCheckpoints: with checkpoint = "1s" the recording of an
// active PostgreSQL session is in the store (active/) while it runs:
// sessions list --store shows it active, show shows its statements so
// far and verify checks it as an unsealed checkpoint (exit 0); once the
// session ends the sealed recording replaces it. A second session's
// daemon is killed with SIGKILL mid-session: its last checkpoint stays
// in the store as the evidence of what it did.
func TestStoreCheckpoints(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s3srv := testenv.StartS3(t, testenv.S3Options{})
	s3srv.MakeBucket(t, "fleet", true)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: "store {\n  url = \"s3://fleet/runners\"\n  endpoint = \"" + s3srv.Endpoint + "\"\n  insecure = true\n  retention = \"1d\"\n  checkpoint = \"1s\"\n}\n",
		Env:  []string{"AWS_ACCESS_KEY_ID=" + s3srv.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3srv.SecretKey}})
	cli := storeCLI(t, s3srv, "--store", "s3://fleet/runners", "--store-endpoint", s3srv.Endpoint, "--store-insecure")
	b, err := s3.Open(s3.Config{URL: "s3://fleet/runners", Endpoint: s3srv.Endpoint, Insecure: true, AccessKey: s3srv.AccessKey, SecretKey: s3srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	// waitActive waits for a checkpoint in the store of an active session
	// with a statement, and returns it.
	waitActive := func(skip map[string]bool) store.Session {
		t.Helper()
		var got store.Session
		testenv.WaitFor(t, 15*time.Second, "a checkpoint of the active session, with its statement, in the store", func() bool {
			out, err := cli("sessions", "list", "--json")
			var list []store.Session
			if err != nil || json.Unmarshal([]byte(out), &list) != nil {
				return false
			}
			for _, s := range list {
				if s.Status == store.StatusActive && s.Statements >= 1 && !skip[s.ID] {
					got = s
					return true
				}
			}
			return false
		})
		return got
	}
	psql := func(sql string) chan error {
		done := make(chan error, 1)
		go func() {
			_, _, err := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, sql))
			done <- err
		}()
		return done
	}

	start := time.Now()
	done := psql("SELECT 'marker_t', pg_sleep(4)")
	act := waitActive(nil)
	t.Logf("the active session's first checkpoint with its statement was listed %v after psql started", time.Since(start).Round(time.Millisecond))
	out, err := cli("sessions", "list")
	if err != nil || !strings.Contains(out, act.ID) || !strings.Contains(out, "active, checkpoint ") {
		t.Errorf("sessions list --store with an active session: %v\n%s", err, out)
	}
	if out, err := cli("sessions", "show", act.ID); err != nil || !strings.Contains(out, "marker_t") || !strings.Contains(out, "unsealed checkpoint of") {
		t.Errorf("sessions show --store of the checkpoint: %v\n%s", err, out)
	}
	if out, err := cli("verify", act.ID); err != nil || !strings.Contains(out, act.ID+": ok, unsealed checkpoint of an active session taken") {
		t.Errorf("verify --store of the checkpoint: %v\n%s", err, out)
	}
	if err := <-done; err != nil {
		t.Fatalf("psql: %v", err)
	}
	d.WaitLog(t, "recording uploaded", func(l testenv.LogLine) bool { return l.String("session") == act.ID })
	testenv.WaitFor(t, 5*time.Second, "the checkpoint deleted once the sealed recording is uploaded", func() bool {
		ids, err := b.Checkpoints(context.Background())
		return err == nil && len(ids) == 0
	})
	if out, err := cli("verify", act.ID); err != nil || !strings.Contains(out, act.ID+": ok, sealed") {
		t.Errorf("verify --store of the sealed recording: %v\n%s", err, out)
	}

	// The VM dies mid-session.
	done = psql("SELECT 'marker_u', pg_sleep(60)")
	act2 := waitActive(map[string]bool{act.ID: true})
	d.Kill9(t)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("psql did not end after the daemon was killed")
	}
	out, err = cli("verify", act2.ID)
	t.Logf("verify of the dead VM's checkpoint:\n%s", out)
	if err != nil || !strings.Contains(out, act2.ID+": ok, unsealed checkpoint of an active session taken") {
		t.Errorf("verify --store of the checkpoint left by the killed daemon: %v", err)
	}
	if out, err := cli("sessions", "show", act2.ID); err != nil || !strings.Contains(out, "marker_u") {
		t.Errorf("sessions show --store of the checkpoint left by the killed daemon: %v\n%s", err, out)
	}
}
