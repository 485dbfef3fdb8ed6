package e2e

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// Secrets of the injection tests: distinctive, so the tests can grep for
// them in everything the daemon wrote.
const (
	deployerSecret = "Dpl0y-9c1f6e-secret"
	readonlySecret = "R3ad-77ab02-secret"
	md5Secret      = "Md5-3e8d41-secret"
)

// injectionRules grants deployer to main-branch jobs of acme/api and
// ci_readonly to its other jobs, on one target.
func injectionRules(addr, deployerFile, readonlyCmd string) string {
	return fmt.Sprintf(`target "pg" {
  protocol     = "postgres"
  address      = [%q]
  upstream_tls = "require"

  credential "deployer" {
    user          = "deployer"
    password_file = %q
    policies      = ["acme-api"]
  }
  credential "ci_readonly" {
    user             = "ci_readonly"
    password_command = [%q]
    policies         = ["*"]
  }
}

policy "acme-api" {
  targets = ["pg"]
  when    = identity.repository == "acme/api"
  credential "deployer" {
    when = identity.ref == "refs/heads/main"
  }
  credential "ci_readonly" {}
}

policy "everyone-else" {
  targets = ["pg"]
}
`, addr, deployerFile, readonlyCmd)
}

// TestCredentialInjection: against a PostgreSQL that requires
// scram-sha-256 (and offers TLS, so the proxy's hop uses
// SCRAM-SHA-256-PLUS), psql in a CI job with a wrong password and any user
// name connects as the role the job's verified identity maps to; a job the
// ruleset grants nothing, and a process with no verified identity, get a
// FATAL 28000 saying why; cancel works on an injected session; and the
// secrets appear in no log line, recording or status output.
func TestCredentialInjection(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2", Auth: "scram-sha-256", Password: "admin-only", TLS: true})
	pg.Admin(t, fmt.Sprintf("CREATE ROLE deployer LOGIN PASSWORD '%s'; CREATE ROLE ci_readonly LOGIN PASSWORD '%s'", deployerSecret, readonlySecret))
	is := testenv.NewIssuer(t)

	secrets := t.TempDir()
	deployerFile := filepath.Join(secrets, "deployer")
	if err := os.WriteFile(deployerFile, []byte(deployerSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	readonlyCmd := filepath.Join(secrets, "ro-token")
	if err := os.WriteFile(readonlyCmd, []byte("#!/bin/sh\nprintf '%s\\n' '"+readonlySecret+"'\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	body := identityBlock(is, "")
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: injectionRules(pg.Addr(), deployerFile, readonlyCmd), Body: body})
	worker := runnerWorker(t)

	// job runs a shell command as a GitHub job of repo at ref, with a
	// wrong password in its environment.
	job := func(repo, ref, command string) (string, error) {
		t.Helper()
		is.SetClaims(map[string]any{"sub": "repo:" + repo + ":ref:" + ref, "repository": repo, "ref": ref, "run_id": "77"})
		cmd, done := cg.Command(t.Context(), worker, "-c", command+"; exit $?")
		defer done()
		cmd.Env = append(os.Environ(), "ACTIONS_ID_TOKEN_REQUEST_URL="+is.TokenURL(),
			"ACTIONS_ID_TOKEN_REQUEST_TOKEN="+is.RequestToken, "PGPASSWORD=wrong-password", "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	psql := func(user, sslmode, query string) string {
		return fmt.Sprintf("psql -X -w 'host=%s port=%d user=%s dbname=postgres sslmode=%s' -Atc %q", pg.Host, pg.Port, user, sslmode, query)
	}
	const who = "select current_user || ' ' || coalesce((select ssl::text from pg_stat_ssl where pid = pg_backend_pid()), 'none')"

	// The main branch authenticates as deployer, whatever user and
	// password the job gives, with TLS on both hops (the proxy's hop
	// then uses SCRAM-SHA-256-PLUS).
	for _, sslmode := range []string{"disable", "require"} {
		out, err := job("acme/api", "refs/heads/main", psql("anyone", sslmode, who))
		if err != nil || out != "deployer true" {
			t.Errorf("main-branch job, client sslmode=%s: %v %q, want \"deployer true\"", sslmode, err, out)
		}
	}
	if l := d.WaitLog(t, "authenticated with an injected credential", nil); l.String("method") != "SCRAM-SHA-256-PLUS" || l.String("rule") != "acme-api/credential/deployer" {
		t.Errorf("injection line %v, want SCRAM-SHA-256-PLUS on the TLS hop", l)
	}
	l := d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("credential") == "deployer" })
	if l.String("client_user") != "anyone" || l.String("db_user") != "deployer" {
		t.Errorf("flow line: %v", l)
	}
	// Other branches of the repository read only.
	if out, err := job("acme/api", "refs/heads/feature", psql("postgres", "prefer", "select current_user")); err != nil || out != "ci_readonly" {
		t.Errorf("feature-branch job: %v %q, want ci_readonly", err, out)
	}
	// Another repository: a policy matches, but none grants a credential.
	out, err := job("acme/web", "refs/heads/main", psql("deployer", "prefer", "select 1"))
	if err == nil || !strings.Contains(out, `no database credential for this job on target "pg"`) || !strings.Contains(out, "no matched policy (everyone-else) grants") {
		t.Errorf("job of another repository: %v\n%s", err, out)
	}
	// No CI job at all: no verified identity.
	out, _, err = psqlIn(t, cg, 0, []string{"sh", "-c", "PGPASSWORD=" + deployerSecret + "x " + psql("deployer", "disable", "select 1")})
	if err == nil || !strings.Contains(out, "verified CI identity") {
		t.Errorf("psql outside a job: %v\n%s", err, out)
	}

	// Cancel on an injected session: pgx sends the CancelRequest with the
	// key data the proxy passed on from the server.
	dsn := fmt.Sprintf("postgres://whoever:wrong@%s/postgres?sslmode=disable", pg.Addr())
	out, err = job("acme/api", "refs/heads/main", pgxclient(t)+" '"+dsn+"' cancel")
	if err != nil || !strings.Contains(out, "sleep err 57014") || !strings.Contains(out, "after-cancel ok 1") {
		t.Errorf("cancel on an injected session: %v\n%s", err, out)
	}

	// Rotation: a new password in the file is used by the next session.
	pg.Admin(t, "ALTER ROLE deployer PASSWORD '"+deployerSecret+"-2'")
	os.WriteFile(deployerFile, []byte(deployerSecret+"-2\n"), 0o600)
	if out, err := job("acme/api", "refs/heads/main", psql("x", "disable", "select current_user")); err != nil || out != "deployer" {
		t.Errorf("after rotating the password file: %v %q", err, out)
	}
	// A password file others can read is refused, with the details only
	// in the daemon's log.
	os.Chmod(deployerFile, 0o644)
	out, err = job("acme/api", "refs/heads/main", psql("x", "disable", "select 1"))
	if err == nil || !strings.Contains(out, `the credential "deployer" for this database cannot be read`) {
		t.Errorf("world-readable password file: %v\n%s", err, out)
	}
	d.WaitLog(t, "cannot read the injected credential", func(l testenv.LogLine) bool { return strings.Contains(l.String("error"), "chmod 600") })

	// The recordings say which credential each session got, and why a
	// refused one got none.
	var shows strings.Builder
	for _, sess := range listSessions(t, d, "--repo", "acme/api") {
		out, _ := d.Sluice(t, "sessions", "show", "--socket", d.Socket, sess.ID)
		shows.WriteString(out)
	}
	for _, want := range []string{"credential deployer injected", "credential ci_readonly injected"} {
		if !strings.Contains(shows.String(), want) {
			t.Errorf("no recorded session shows %q", want)
		}
	}
	web, _ := d.Sluice(t, "sessions", "list", "--socket", d.Socket, "--repo", "acme/web")
	if !strings.Contains(web, "acme/web") {
		t.Errorf("the refused job's session is not recorded:\n%s", web)
	}

	status, _ := d.Sluice(t, "status", "--socket", d.Socket)
	assertNoSecret(t, d, status+shows.String(), deployerSecret, readonlySecret)
}

// TestCredentialInjectionMD5: a server that stores an MD5 password gets
// the MD5 answer, with the secret from the daemon's environment.
func TestCredentialInjectionMD5(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2", Auth: "md5", Password: "admin-only"})
	pg.Admin(t, fmt.Sprintf("SET password_encryption = 'md5'; CREATE ROLE app LOGIN PASSWORD '%s'", md5Secret))
	is := testenv.NewIssuer(t)
	rules := fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
  credential "app" {
    user         = "app"
    password_env = "APP_DB_PASSWORD"
    policies     = ["ci"]
  }
}
policy "ci" {
  targets = ["pg"]
  credential "app" {}
}
`, pg.Addr())
	body := identityBlock(is, "")
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules, Body: body, Env: []string{"APP_DB_PASSWORD=" + md5Secret}})
	worker := runnerWorker(t)
	is.SetClaims(map[string]any{"sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api", "ref": "refs/heads/main"})
	cmd, done := cg.Command(t.Context(), worker, "-c", fmt.Sprintf("psql -X -w -h %s -p %d -U nobody-in-particular -d postgres -Atc 'select current_user'; exit $?", pg.Host, pg.Port))
	defer done()
	cmd.Env = append(os.Environ(), "ACTIONS_ID_TOKEN_REQUEST_URL="+is.TokenURL(), "ACTIONS_ID_TOKEN_REQUEST_TOKEN="+is.RequestToken)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "app" {
		t.Fatalf("md5 injection: %v %q", err, out)
	}
	if l := d.WaitLog(t, "authenticated with an injected credential", nil); l.String("method") != "md5" {
		t.Errorf("injection line %v, want md5", l)
	}
	assertNoSecret(t, d, "", md5Secret)
}

// assertNoSecret fails if any secret appears in the daemon's log, in any
// file under its data directory (recordings, index, keys), or in extra.
func assertNoSecret(t *testing.T, d *testenv.Daemon, extra string, secrets ...string) {
	t.Helper()
	check := func(where string, b []byte) {
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("secret %q found in %s", s, where)
			}
		}
	}
	log, err := os.ReadFile(d.LogPath)
	if err != nil || len(log) == 0 {
		t.Fatalf("daemon log: %v", err)
	}
	check("the daemon log", log)
	check("sluice status", []byte(extra))
	files := 0
	filepath.WalkDir(d.DataDir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil {
			files++
			check(p, b)
		}
		return nil
	})
	if files == 0 {
		t.Fatal("no files under the data directory: the recordings were not checked")
	}
}
