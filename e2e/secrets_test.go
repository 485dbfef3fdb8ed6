package e2e

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/testenv"
)

// TestRecordingsHoldNoSecret: after cleartext, MD5 and SCRAM logins relayed
// at record = "full", no file the daemon wrote (recordings, index, keys)
// and none of its logs holds the password, nor the MD5 form a client sends
// derived from it; and the recording still exports as a pcap tshark
// decodes, with the session's statement in it.
func TestRecordingsHoldNoSecret(t *testing.T) {
	_, err := exec.LookPath("tshark")
	testenv.Need(t, err == nil, "tshark is not installed (Debian package tshark)")
	cg := testenv.NewCgroup(t)
	type login struct {
		auth, password string
		pg             *testenv.Postgres
	}
	logins := []*login{
		{auth: "password", password: "Cleartext-S3cret-9f2c"},
		{auth: "md5", password: "Md5-S3cret-41aa"},
		{auth: "scram-sha-256", password: "Scram-S3cret-77d0"},
	}
	var rules string
	for i, l := range logins {
		l.pg = testenv.StartPostgres(t, testenv.PostgresOptions{Host: fmt.Sprintf("127.0.0.%d", i+2), Auth: l.auth, Password: l.password})
		name := fmt.Sprintf("pg%d", i)
		rules += fmt.Sprintf("target %q {\n  protocol = \"postgres\"\n  address  = [%q]\n}\n", name, l.pg.Addr())
	}
	rules += "policy \"ci\" {\n  targets = [\"*\"]\n  record  = \"full\"\n}\n"
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})

	for _, l := range logins {
		dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres password=%s sslmode=disable", l.pg.Host, l.pg.Port, l.password)
		out, err := cg.Run(t, "psql", "-X", "-w", "-At", "-c", "SELECT 'recorded-"+l.auth+"'", dsn)
		if err != nil || !strings.Contains(out, "recorded-"+l.auth) {
			t.Fatalf("psql %s: %v: %s", l.auth, err, out)
		}
	}
	var sessions []store.Session
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		sessions = listSessions(t, d)
		sealed := 0
		for _, s := range sessions {
			if s.Status == store.StatusSealed {
				sealed++
			}
		}
		if sealed == len(logins) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions, want %d sealed: %+v", len(sessions), len(logins), sessions)
		}
	}

	// What must appear nowhere: each password, and for MD5 the hash a
	// client sends (md5(password || user), salted per session on top).
	var secrets []string
	for _, l := range logins {
		inner := md5.Sum([]byte(l.password + "postgres"))
		secrets = append(secrets, l.password, hex.EncodeToString(inner[:]))
	}
	scanned := 0
	for _, root := range []string{d.DataDir, d.Dir()} {
		filepath.WalkDir(root, func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Type()&os.ModeSocket != 0 {
				return nil
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return nil
			}
			scanned++
			for _, s := range secrets {
				if strings.Contains(string(b), s) {
					t.Errorf("%s holds a secret (%.6s...)", path, s)
				}
			}
			return nil
		})
	}
	if scanned < 3 {
		t.Fatalf("scanned %d files: where are the recordings?", scanned)
	}

	// The recordings still decode: each exports as a pcap whose
	// PostgreSQL stream tshark reads, statement included.
	dir := t.TempDir()
	for i, s := range sessions {
		pcap := filepath.Join(dir, fmt.Sprintf("%d.pcap", i))
		if out, err := d.Sluice(t, "export", s.ID, "--socket", d.Socket, "--format", "pcap", "-o", pcap); err != nil {
			t.Fatalf("export pcap: %v\n%s", err, out)
		}
		b, _ := os.ReadFile(pcap)
		for _, sec := range secrets {
			if strings.Contains(string(b), sec) {
				t.Errorf("the export of %s holds a secret", s.ID)
			}
		}
		port := strings.TrimPrefix(s.OrigDst[strings.LastIndex(s.OrigDst, ":"):], ":")
		q, err := exec.Command("tshark", "-n", "-r", pcap, "-d", "tcp.port=="+port+",pgsql", "-Y", "pgsql",
			"-T", "fields", "-e", "pgsql.query").CombinedOutput()
		if err != nil || !strings.Contains(string(q), "SELECT 'recorded-") {
			t.Errorf("tshark on the export of %s: %v\n%s", s.ID, err, q)
		}
	}
}
