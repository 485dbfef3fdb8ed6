package e2e

import (
	"bytes"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestRecordingsHoldNoSecret: after cleartext, MD5 and SCRAM logins relayed
// at record = "full" (SCRAM also over a TLS client hop), and a cleartext
// login with a wrong password, no file the daemon wrote (recordings, index,
// keys) and none of its logs holds a password, in clear, in base64 at any
// alignment (how a recording stores wire bytes), or in its MD5 forms. Each
// recording still exports as a pcap tshark decodes: the StartupMessage,
// the server's AuthenticationOk, ParameterStatus and ReadyForQuery (or its
// error for the wrong password), the statement, and no password message
// of any kind.
//
// Needs root (cgroup, eBPF), PostgreSQL's server binaries, psql, tshark.
func TestRecordingsHoldNoSecret(t *testing.T) {
	_, err := exec.LookPath("tshark")
	testenv.Need(t, err == nil, "tshark is not installed (Debian package tshark)")
	cg := testenv.NewCgroup(t)
	type login struct {
		auth, password string
		tls            bool
		options        string // libpq options
		wrong          string // a wrong password tried first, refused by the server
		pg             *testenv.Postgres
	}
	logins := []*login{
		{auth: "password", password: "Cleartext-S3cret-9f2c", options: "sslmode=disable", wrong: "Wrong-Cleartext-5e1b"},
		{auth: "md5", password: "Md5-S3cret-41aa", options: "sslmode=disable"},
		{auth: "scram-sha-256", password: "Scram-S3cret-77d0", options: "sslmode=disable"},
		{auth: "scram-sha-256", password: "Scram-Tls-S3cret-0b3e", tls: true, options: "sslmode=require channel_binding=disable"},
	}
	var rules string
	for i, l := range logins {
		l.pg = testenv.StartPostgres(t, testenv.PostgresOptions{Host: fmt.Sprintf("127.0.0.%d", i+2), Auth: l.auth, Password: l.password, TLS: l.tls})
		rules += fmt.Sprintf("target \"pg%d\" {\n  protocol = \"postgres\"\n  address  = [%q]\n}\n", i, l.pg.Addr())
	}
	rules += "policy \"ci\" {\n  targets = [\"*\"]\n  record  = \"full\"\n}\n"
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})

	sessions := 0
	for i, l := range logins {
		dsn := func(pw string) string {
			return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres password=%s %s", l.pg.Host, l.pg.Port, pw, l.options)
		}
		if l.wrong != "" {
			out, err := cg.Run(t, "psql", "-X", "-w", "-At", "-c", "SELECT 1", dsn(l.wrong))
			if err == nil || !strings.Contains(out, "password authentication failed") {
				t.Fatalf("psql %s with a wrong password: %v: %s", l.auth, err, out)
			}
			sessions++
		}
		tag := fmt.Sprintf("recorded-%d", i)
		out, err := cg.Run(t, "psql", "-X", "-w", "-At", "-c", "SELECT '"+tag+"'", dsn(l.password))
		if err != nil || !strings.Contains(out, tag) {
			t.Fatalf("psql %s %s: %v: %s", l.auth, l.options, err, out)
		}
		sessions++
	}
	list := waitSealed(t, d, sessions, 10*time.Second)

	// What must appear nowhere.
	var secrets [][]byte
	for _, l := range logins {
		for _, pw := range []string{l.password, l.wrong} {
			if pw != "" {
				secrets = append(secrets, secretForms(pw, "postgres")...)
			}
		}
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
				if bytes.Contains(b, s) {
					t.Errorf("%s holds a secret (%.6s...)", path, s)
				}
			}
			return nil
		})
	}
	if recs, _ := filepath.Glob(filepath.Join(d.DataDir, "recordings", "*", "*.rec")); len(recs) != sessions {
		t.Fatalf("scanned %d files, %d of them recordings; want %d recordings", scanned, len(recs), sessions)
	}

	// The recordings still decode: each exports as a pcap whose PostgreSQL
	// stream tshark reads, with the login's outcome and no password
	// message (cleartext, MD5, SASL initial or SASL response).
	dir := t.TempDir()
	for i, s := range list {
		pcap := filepath.Join(dir, fmt.Sprintf("%d.pcap", i))
		if out, err := d.Sluice(t, "export", s.ID, "--socket", d.Socket, "--format", "pcap", "-o", pcap); err != nil {
			t.Fatalf("export pcap: %v\n%s", err, out)
		}
		b, _ := os.ReadFile(pcap)
		for _, sec := range secrets {
			if bytes.Contains(b, sec) {
				t.Errorf("the export of %s holds a secret (%.6s...)", s.ID, sec)
			}
		}
		port := s.OrigDst[strings.LastIndex(s.OrigDst, ":")+1:]
		out, err := exec.Command("tshark", "-n", "-r", pcap, "-d", "tcp.port=="+port+",pgsql", "-Y", "pgsql",
			"-T", "fields", "-E", "occurrence=a", "-E", "aggregator=|", "-e", "pgsql.type", "-e", "pgsql.query").Output()
		if err != nil {
			t.Fatalf("tshark on the export of %s: %v\n%s", s.ID, err, out)
		}
		var types []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f, _, _ := strings.Cut(line, "\t")
			types = append(types, strings.Split(f, "|")...)
		}
		t.Logf("%s (%s): %q", s.ID, s.OrigDst, types)
		for _, ty := range types {
			if strings.Contains(strings.ToLower(ty), "password") || strings.Contains(strings.ToLower(ty), "sasl") {
				t.Errorf("the recording of %s holds a %q", s.ID, ty)
			}
		}
		want := []string{"Startup message", "Authentication request", "Parameter status", "Ready for query", "Simple query"}
		if !strings.Contains(string(out), "SELECT 'recorded-") { // the wrong password
			want = []string{"Startup message", "Error"}
		}
		if len(types) == 0 || types[0] != want[0] {
			t.Errorf("the recording of %s does not start with the StartupMessage: %q", s.ID, types)
		}
		for _, w := range want {
			if !slices.Contains(types, w) {
				t.Errorf("the recording of %s has no %q: %q", s.ID, w, types)
			}
		}
	}
}

// secretForms are the byte strings a leak of password (of user) would
// leave: the password; its base64 at each of the three alignments a
// message can put it at, without the edge characters that depend on its
// neighbours; and the MD5 hash PostgreSQL stores and clients salt,
// md5(password || user), in hex, with and without its "md5" prefix.
func secretForms(password, user string) [][]byte {
	forms := [][]byte{[]byte(password)}
	for pad := 0; pad < 3; pad++ {
		enc := base64.StdEncoding.EncodeToString(append(make([]byte, pad), password...))
		start := 0
		if pad > 0 {
			start = 4
		}
		forms = append(forms, []byte(enc[start:len(enc)-4]))
	}
	inner := md5.Sum([]byte(password + user))
	forms = append(forms, []byte(hex.EncodeToString(inner[:])))
	return forms
}
