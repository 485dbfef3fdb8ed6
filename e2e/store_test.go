package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestStoreOutlivesTheVM: a PostgreSQL session recorded on daemon A is
// uploaded to a real S3-compatible server (versitygw, object lock on); a
// second one, sealed while the server is down, is pending in sluice
// status and uploaded once the server is back; A is stopped and its data
// directory deleted; sluice sessions list, show, export and verify
// --store still list, show and verify them, with no daemon, and verify
// with a pinned key of another VM fails.
func TestStoreOutlivesTheVM(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s3 := testenv.StartS3(t, testenv.S3Options{})
	s3.MakeBucket(t, "fleet", true)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg,
		Rules: strings.Replace(pgRules(pg.Addr()), `targets = ["pg"]`, "targets = [\"pg\"]\n  record  = \"full\"", 1),
		Body: `store {
  url            = "s3://fleet/runners"
  endpoint       = "` + s3.Endpoint + `"
  insecure       = true
  access_key_env = "SLUICE_TEST_S3_KEY"
  secret_key_env = "SLUICE_TEST_S3_SECRET"
  retention      = "1d"
}
`,
		Env: []string{"SLUICE_TEST_S3_KEY=" + s3.AccessKey, "SLUICE_TEST_S3_SECRET=" + s3.SecretKey}})
	admin(t, pg, "create table t(id int); insert into t values (1), (2)")

	out, _, _ := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "SELECT id FROM t ORDER BY id; DROP TABLE t;"))
	if !strings.Contains(out, "denied") {
		t.Fatalf("psql: %s", out)
	}
	sess := waitSealed(t, d, 1, 10*time.Second)[0]
	up := d.WaitLog(t, "recording uploaded", func(l testenv.LogLine) bool { return l.String("session") == sess.ID })
	t.Logf("uploaded %s bytes, %s ms after the seal", up.String("bytes"), up.String("delay_after_seal_ms"))

	// The store goes away: the next session is sealed all the same, and
	// its upload waits.
	s3.Stop(t)
	if out, _, err := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "SELECT 2")); err != nil {
		t.Fatalf("psql with the store down: %v\n%s", err, out)
	}
	waitSealed(t, d, 2, 10*time.Second)
	uploads := func() api.Uploads {
		st, err := d.Status()
		if err != nil || st.Uploads == nil {
			t.Fatalf("status: %v, uploads %v", err, st.Uploads)
		}
		return *st.Uploads
	}
	testenv.WaitFor(t, 10*time.Second, "a failed upload try with the store down", func() bool { u := uploads(); return u.FailedTries > 0 && u.Pending == 1 })
	if out, err := d.Sluice(t, "status", "--socket", d.Socket); err != nil || !strings.Contains(out, "1 recordings uploaded, 1 pending") {
		t.Errorf("sluice status with the store down: %v\n%s", err, out)
	}
	s3.Start(t)
	back := time.Now()
	testenv.WaitFor(t, 20*time.Second, "the pending upload done once the store is back", func() bool { u := uploads(); return u.Uploaded == 2 && u.Pending == 0 })
	t.Logf("the pending upload was done %v after the store came back (retry backoff 1 s, doubling)", time.Since(back).Round(time.Millisecond))

	dir := t.TempDir()
	pubA := filepath.Join(dir, "a.pub")
	pub, err := d.Sluice(t, "recordings", "pubkey", "--data-dir", d.DataDir)
	if err != nil {
		t.Fatalf("recordings pubkey: %v\n%s", err, pub)
	}
	os.WriteFile(pubA, []byte(pub), 0o600)

	// The VM goes away.
	d.Stop(t)
	if err := os.RemoveAll(d.DataDir); err != nil {
		t.Fatal(err)
	}

	cli := storeCLI(t, s3)
	at := []string{"--store", "s3://fleet/runners", "--store-endpoint", s3.Endpoint, "--store-insecure"}
	with := func(args ...string) []string { return append(args, at...) }

	start := time.Now()
	out, err = cli(with("sessions", "list", "--json")...)
	if err != nil {
		t.Fatalf("sessions list --store: %v\n%s", err, out)
	}
	var list []store.Session
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions list --store output: %v\n%s", err, out)
	}
	if len(list) != 2 || list[1].ID != sess.ID || list[1].Status != store.StatusSealed || list[1].Denied != 1 || list[1].Target != "pg" || list[0].Status != store.StatusSealed {
		t.Fatalf("sessions list --store = %+v, want two sealed sessions, the older %s", list, sess.ID)
	}
	t.Logf("sessions list --store took %v", time.Since(start).Round(time.Millisecond))

	start = time.Now()
	show, err := cli(with("sessions", "show", sess.ID[:20])...)
	if err != nil {
		t.Fatalf("sessions show --store: %v\n%s", err, show)
	}
	for _, want := range []string{
		"session   " + sess.ID + " (sealed; recording sealed",
		"target    pg (postgres) " + pg.Addr(),
		"=> SELECT id FROM t ORDER BY id; DROP TABLE t;",
		"[deny] rule ci/deny/no-drop: schema changes go through migrations",
	} {
		if !strings.Contains(show, want) {
			t.Errorf("sessions show --store lacks %q:\n%s", want, show)
		}
	}
	t.Logf("sessions show --store took %v", time.Since(start).Round(time.Millisecond))

	if out, err := cli(with("export", sess.ID, "--format", "jsonl")...); err != nil || !strings.Contains(out, "DROP TABLE t") {
		t.Errorf("export --store: %v\n%s", err, out)
	}

	start = time.Now()
	if out, err := cli(with("verify", "--all")...); err != nil || strings.Count(out, ": ok, sealed") != 2 || !strings.Contains(out, sess.ID+": ok, sealed") || !strings.Contains(out, "the key its sidecar names") {
		t.Errorf("verify --store --all: %v\n%s", err, out)
	}
	t.Logf("verify --store --all took %v", time.Since(start).Round(time.Millisecond))
	if out, err := cli(with("verify", "--pub", pubA, sess.ID)...); err != nil || !strings.Contains(out, sess.ID+": ok, sealed") || !strings.Contains(out, "pinned key") {
		t.Errorf("verify --store --pub (A's key): %v\n%s", err, out)
	}

	// Another VM's key: the recording is not its.
	if out, err := cli("rules", "keygen", "--out", filepath.Join(dir, "other")); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	out, err = cli(with("verify", "--pub", filepath.Join(dir, "other.pub"), sess.ID)...)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(out, sess.ID+": ALTERED") {
		t.Errorf("verify --store with another VM's key: %v\n%s", err, out)
	}

	// No daemon was asked: the flags say so when misused.
	if out, err := cli("sessions", "list", "--store-endpoint", s3.Endpoint); err == nil || !strings.Contains(out, "need --store") {
		t.Errorf("--store-endpoint without --store: %v\n%s", err, out)
	}
}

// TestStoreUploadsOnStop: a recording whose upload is waiting out its
// retry backoff is uploaded when sluiced stops, not left behind.
func TestStoreUploadsOnStop(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s3 := testenv.StartS3(t, testenv.S3Options{})
	s3.MakeBucket(t, "fleet", false)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: "store {\n  url = \"s3://fleet\"\n  endpoint = \"" + s3.Endpoint + "\"\n  insecure = true\n}\n",
		Env:  []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}})

	s3.Stop(t)
	if out, _, err := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "SELECT 1")); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	sess := waitSealed(t, d, 1, 10*time.Second)[0]
	// Two failed tries: the next waits 2 s, longer than what follows.
	testenv.WaitFor(t, 10*time.Second, "two failed upload tries", func() bool {
		st, err := d.Status()
		return err == nil && st.Uploads != nil && st.Uploads.FailedTries >= 2
	})
	s3.Start(t)
	start := time.Now()
	d.Stop(t)
	t.Logf("sluiced stopped %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	stopping, uploaded := -1, -1
	for i, l := range d.Logs(t) {
		switch l.Message() {
		case "recordings not uploaded before exit":
			t.Errorf("sluiced left uploads behind: %v", l)
		case "sluiced stopping; pinned hooks stay in place and refuse connections until a daemon is back":
			stopping = i
		case "recording uploaded":
			uploaded = i
		}
	}
	if stopping < 0 || uploaded < stopping {
		t.Errorf("the upload (log line %d) was not done by the stopping daemon (line %d)", uploaded, stopping)
	}
	if out, err := storeCLI(t, s3)("verify", sess.ID, "--store", "s3://fleet", "--store-endpoint", s3.Endpoint, "--store-insecure"); err != nil || !strings.Contains(out, sess.ID+": ok, sealed") {
		t.Errorf("verify --store after the stop: %v\n%s", err, out)
	}
}

// TestStoreQueueSurvivesRestart: a recording sealed while the store is
// down and still pending when sluiced stops is uploaded by the next
// start (the persistent queue under data_dir/uploads), which sluice
// status reports; the queue file goes once the store has it.
func TestStoreQueueSurvivesRestart(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s3 := testenv.StartS3(t, testenv.S3Options{})
	s3.MakeBucket(t, "fleet", false)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: pgRules(pg.Addr()),
		Body: "store {\n  url = \"s3://fleet\"\n  endpoint = \"" + s3.Endpoint + "\"\n  insecure = true\n}\n",
		Env:  []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey}})

	s3.Stop(t)
	if out, _, err := psqlIn(t, cg, nobody(t), pg.PsqlArgs("", 0, "SELECT 1")); err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	sess := waitSealed(t, d, 1, 10*time.Second)[0]
	queued := filepath.Join(d.DataDir, "uploads", sess.ID+".json")
	if _, err := os.Stat(queued); err != nil {
		t.Fatalf("queue file of the pending upload: %v", err)
	}
	testenv.WaitFor(t, 10*time.Second, "a failed upload try", func() bool {
		st, err := d.Status()
		return err == nil && st.Uploads != nil && st.Uploads.FailedTries >= 1
	})
	d.Stop(t) // with the store still down: the upload is left behind
	left := false
	for _, l := range d.Logs(t) {
		left = left || l.Message() == "recordings not uploaded before exit; their local copies and queue files stay in data_dir and the next start uploads them"
	}
	if !left {
		t.Fatalf("the stopping daemon did not log the upload it left behind")
	}

	s3.Start(t)
	start := time.Now()
	d.Start(t)
	up := d.WaitLog(t, "recording uploaded", func(l testenv.LogLine) bool { return l.String("session") == sess.ID })
	t.Logf("the recording left pending by the previous daemon was uploaded %v after the restart began (log: %s ms after its seal)",
		time.Since(start).Round(time.Millisecond), up.String("delay_after_seal_ms"))
	d.WaitLog(t, "uploads pending when sluiced last stopped are queued again", func(l testenv.LogLine) bool { return l.String("pending") == "1" })
	st, err := d.Status()
	if err != nil || st.Uploads == nil || st.Uploads.Resumed != 1 || st.Uploads.Uploaded != 1 || st.Uploads.Pending != 0 {
		t.Fatalf("status after the restart: %v, %+v", err, st.Uploads)
	}
	if out, err := d.Sluice(t, "status", "--socket", d.Socket); err != nil || !strings.Contains(out, "1 of them were pending when sluiced last stopped") {
		t.Errorf("sluice status after the restart: %v\n%s", err, out)
	}
	testenv.WaitFor(t, 5*time.Second, "the queue file removed", func() bool { _, err := os.Stat(queued); return os.IsNotExist(err) })
	if out, err := storeCLI(t, s3)("verify", sess.ID, "--store", "s3://fleet", "--store-endpoint", s3.Endpoint, "--store-insecure"); err != nil || !strings.Contains(out, sess.ID+": ok, sealed") {
		t.Errorf("verify --store after the restart: %v\n%s", err, out)
	}
}

// storeCLI returns a runner of the sluice binary under test with the S3
// server's credentials in its environment (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY), as a responder's laptop has them, appending
// tail to every command's arguments.
func storeCLI(t *testing.T, srv *testenv.S3, tail ...string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(filepath.Join(testenv.Binaries(t), "sluice"), append(args, tail...)...)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY="+srv.SecretKey)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
}
