package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// myRules is a ruleset with one mysql target at addr: DROP and reading
// server files denied, emails masked by column, SSNs by detector, and a
// hold on deletes (no approver answers it in these tests).
func myRules(addr string) string {
	return fmt.Sprintf(`target "my" {
  protocol = "mysql"
  address  = [%q]
}

policy "ci" {
  targets = ["my"]
  record  = "full"

  deny "no-drop" {
    when   = sql.kind == "drop"
    reason = "schema changes go through migrations"
  }
  deny "no-files" {
    when   = contains(sql.flags, "load_file") || contains(sql.flags, "into_outfile")
    reason = "server files stay on the server"
  }
  hold "deletes" {
    when      = sql.kind == "delete"
    approvers = ["group:security"]
    timeout   = "1s"
  }
  mask "pii" {
    columns = ["people.email"]
    using   = "hash"
  }
  mask "ids" {
    detect = ["ssn"]
    using  = "redact"
  }
}
`, addr)
}

// TestMySQLClient: the unchanged mariadb client, at the server's real
// address from a hooked cgroup, gets denials as ERROR 1227 (42000) naming
// the rule, masked emails and SSNs, and its session recorded; the
// server never sees what was refused.
func TestMySQLClient(t *testing.T) {
	_, err := exec.LookPath("mariadb")
	testenv.Need(t, err == nil, "the MariaDB client is not installed (scripts/install-deps.sh installs mariadb-client)")
	cg := testenv.NewCgroup(t)
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Host: "127.0.0.2"})
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: myRules(my.HostPort())})

	run := func(query string, extra ...string) string {
		t.Helper()
		args := my.ClientArgs(testenv.MariaDBAppUser, testenv.MariaDBAppPassword, query)
		args = append(args, extra...)
		out, _ := cg.Run(t, args[0], args[1:]...)
		return out
	}

	out := run("DROP TABLE people")
	if !strings.Contains(out, `ERROR 1227 (42000)`) || !strings.Contains(out, `sluice: statement denied by rule "ci/deny/no-drop": schema changes go through migrations`) {
		t.Errorf("DROP through the proxy: %q", out)
	}
	out = run("SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */")
	if !strings.Contains(out, `ci/deny/no-files`) {
		t.Errorf("an executable comment hiding LOAD_FILE: %q", out)
	}
	// Nobody answers the hold: it expires after a second, refused.
	out = run("DELETE FROM people WHERE id = 1")
	if !strings.Contains(out, `ERROR 1227 (42000)`) || !strings.Contains(out, `ci/hold/deletes`) {
		t.Errorf("a held DELETE with no approver: %q", out)
	}
	out = run("SELECT id, name, email, ssn FROM people ORDER BY id")
	for _, p := range testenv.MariaDBPeople {
		// The ssn detector finds valid SSNs only: none has area 9xx.
		if strings.Contains(out, p.Email) || p.SSN[0] != '9' && strings.Contains(out, p.SSN) {
			t.Errorf("raw personal data through the proxy:\n%s", out)
		}
		if !strings.Contains(out, p.Name) {
			t.Errorf("unmasked column %q missing:\n%s", p.Name, out)
		}
	}
	// TLS from the client, verified against Sluice's CA.
	caPath := filepath.Join(d.Dir(), "ca.crt")
	if out, err := d.Sluice(t, "ca", "--data-dir", d.DataDir); err != nil {
		t.Fatalf("sluice ca: %v\n%s", err, out)
	} else if err := os.WriteFile(caPath, []byte(out[strings.Index(out, "-----BEGIN"):]), 0o644); err != nil {
		t.Fatal(err)
	}
	out = run("SHOW SESSION STATUS LIKE 'Ssl_version'", "--ssl", "--ssl-ca="+caPath, "--ssl-verify-server-cert")
	if !strings.Contains(out, "TLS") {
		t.Errorf("TLS through the proxy: %q", out)
	}
	if n := my.Admin(t, "SELECT COUNT(*) FROM app.people"); n != fmt.Sprint(len(testenv.MariaDBPeople)) {
		t.Errorf("people has %s rows, want %d: a refused statement reached the server", n, len(testenv.MariaDBPeople))
	}

	l := d.WaitLog(t, "statement denied", func(l testenv.LogLine) bool { return l.String("rule") == "ci/deny/no-drop" })
	if l.String("kind") != "drop" {
		t.Errorf("denial log line %v", l)
	}
	fl := d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("protocol") == "mysql" })
	if fl.String("db_user") != testenv.MariaDBAppUser {
		t.Errorf("mysql flow line %v, want db_user %s", fl, testenv.MariaDBAppUser)
	}

	// The sessions are recorded and export as PostgreSQL's do; a pcap
	// export decodes as MySQL.
	var id string
	testenv.WaitFor(t, 10*time.Second, "a sealed mysql session", func() bool {
		for _, s := range listSessions(t, d) {
			if s.Target == "my" && !s.End.IsZero() && s.Statements > 0 {
				id = s.ID
				return true
			}
		}
		return false
	})
	show, err := d.Sluice(t, "sessions", "show", "--socket", d.Socket, id)
	if err != nil || !strings.Contains(show, "my") {
		t.Fatalf("sessions show: %v\n%s", err, show)
	}
	// The same exports as PostgreSQL's: JSON lines, asciicast, replay.
	if out, err := d.Sluice(t, "export", id, "--socket", d.Socket, "--format", "jsonl"); err != nil ||
		!strings.Contains(out, `"type":"statement"`) || !strings.Contains(out, `"session":"`+id+`"`) {
		t.Errorf("export jsonl: %v\n%s", err, out)
	}
	if out, err := d.Sluice(t, "export", id, "--socket", d.Socket, "--format", "asciicast"); err != nil ||
		!strings.HasPrefix(out, `{"version":2`) || !strings.Contains(out, "SHOW SESSION STATUS") && !strings.Contains(out, "SELECT") {
		t.Errorf("export asciicast: %v\n%s", err, out)
	}
	if out, err := d.Sluice(t, "replay", "--socket", d.Socket, "--speed", "1000", id); err != nil || !strings.Contains(out, "=> ") {
		t.Errorf("replay: %v\n%s", err, out)
	}
	if _, err := exec.LookPath("tshark"); err == nil {
		pcap := filepath.Join(t.TempDir(), "s.pcap")
		port := strings.TrimPrefix(my.HostPort(), my.Addr+":")
		if out, err := d.Sluice(t, "export", id, "--socket", d.Socket, "--format", "pcap", "-o", pcap); err != nil {
			t.Fatalf("export pcap: %v\n%s", err, out)
		} else if !strings.Contains(out, "decode with tshark -d tcp.port=="+port+",mysql") {
			t.Errorf("export pcap names no mysql dissector hint:\n%s", out)
		}
		dec, err := exec.Command("tshark", "-r", pcap, "-d", "tcp.port=="+port+",mysql", "-Y", "mysql.query", "-T", "fields", "-e", "mysql.query").CombinedOutput()
		if err != nil || !strings.Contains(string(dec), "SELECT") && !strings.Contains(string(dec), "SHOW") {
			t.Errorf("tshark on the exported pcap: %v\n%s", err, dec)
		}
	}
}

// TestMySQLClientOnCore: a plaintext session (no TLS from the client, none
// to the server) runs its commands on the io_uring relay core, recorded
// at the full level there: the same denials and masks reach the unchanged
// mariadb client, the flow log says relay_core=io_uring, and a held
// statement takes its session off the core, refused when nobody approves.
func TestMySQLClientOnCore(t *testing.T) {
	_, err := exec.LookPath("mariadb")
	testenv.Need(t, err == nil, "the MariaDB client is not installed (scripts/install-deps.sh installs mariadb-client)")
	cg := testenv.NewCgroup(t)
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Host: "127.0.0.2"})
	rules := strings.Replace(myRules(my.HostPort()), `protocol = "mysql"`, `protocol = "mysql"`+"\n  upstream_tls = \"disable\"", 1)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})
	run := func(query string) string {
		t.Helper()
		args := append(my.ClientArgs(testenv.MariaDBAppUser, testenv.MariaDBAppPassword, query), "--skip-ssl")
		out, _ := cg.Run(t, args[0], args[1:]...)
		return out
	}

	out := run("SELECT id, name, email, ssn FROM people ORDER BY id; DROP TABLE people")
	if !strings.Contains(out, `ERROR 1227 (42000)`) || !strings.Contains(out, `ci/deny/no-drop`) {
		t.Errorf("DROP on the core: %q", out)
	}
	for _, p := range testenv.MariaDBPeople {
		if strings.Contains(out, p.Email) || p.SSN[0] != '9' && strings.Contains(out, p.SSN) || !strings.Contains(out, p.Name) {
			t.Errorf("masking on the core:\n%s", out)
		}
	}
	out = run("DELETE FROM people WHERE id = 1")
	if !strings.Contains(out, `ERROR 1227 (42000)`) || !strings.Contains(out, `ci/hold/deletes`) {
		t.Errorf("a held DELETE with no approver: %q", out)
	}
	if n := my.Admin(t, "SELECT COUNT(*) FROM app.people"); n != fmt.Sprint(len(testenv.MariaDBPeople)) {
		t.Errorf("people has %s rows, want %d: a refused statement reached the server", n, len(testenv.MariaDBPeople))
	}
	for _, want := range []string{"io_uring", "io_uring, then goroutines: a statement held for approval"} {
		fl := d.WaitLog(t, "flow", func(l testenv.LogLine) bool {
			return l.String("protocol") == "mysql" && l.String("relay_core") == want
		})
		if fl["client_tls"] != false || fl["upstream_tls"] != false {
			t.Errorf("flow %v: want plaintext on both hops", fl)
		}
	}
	// Recorded at the full level on the core: the statements and the
	// client's wire bytes.
	var id string
	testenv.WaitFor(t, 10*time.Second, "a sealed mysql session with its statements", func() bool {
		for _, s := range listSessions(t, d) {
			if s.Target == "my" && !s.End.IsZero() && s.Statements >= 2 {
				id = s.ID
				return true
			}
		}
		return false
	})
	if out, err := d.Sluice(t, "export", id, "--socket", d.Socket, "--format", "jsonl"); err != nil ||
		!strings.Contains(out, `"type":"wire"`) || !strings.Contains(out, "DROP TABLE people") {
		t.Errorf("export jsonl of the session on the core: %v\n%s", err, out)
	}
}
