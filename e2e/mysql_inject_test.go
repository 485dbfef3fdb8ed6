package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/internal/testenv"
)

// myInjectionRules grants credential deployer (MariaDB's native-password
// account, its secret in a root-only file) to main-branch jobs of
// acme/api and ci_readonly (the ed25519 account, its secret in the
// daemon's environment) to its other jobs, on one mysql target.
func myInjectionRules(addr, deployerFile string) string {
	return fmt.Sprintf(`target "my" {
  protocol     = "mysql"
  address      = [%q]
  upstream_tls = "require"

  credential "deployer" {
    user          = %q
    password_file = %q
    policies      = ["acme-api"]
  }
  credential "ci_readonly" {
    user         = %q
    password_env = "MY_READONLY_PASSWORD"
    policies     = ["*"]
  }
}

policy "acme-api" {
  targets = ["my"]
  when    = identity.repository == "acme/api"
  record  = "full"
  credential "deployer" {
    when = identity.ref == "refs/heads/main"
  }
  credential "ci_readonly" {}
}

policy "everyone-else" {
  targets = ["my"]
}
`, addr, testenv.MariaDBAppUser, deployerFile, testenv.MariaDBEdUser)
}

// TestMySQLCredentialInjection: against MariaDB 10.11 (TLS on the
// proxy's hop), the unchanged mariadb client in a CI job, with any user
// and a wrong password, logs in as the account its verified identity is
// granted (mysql_native_password on the main branch, client_ed25519 on
// others), with or without TLS to the proxy; a job of another repository
// and a process outside any job get ERROR 1045 (28000) saying why; and
// the secrets are in no log line, file of the data directory or status
// output.
//
// Needs root (cgroup, eBPF, the daemon), mariadb-server and
// mariadb-client.
func TestMySQLCredentialInjection(t *testing.T) {
	_, err := exec.LookPath("mariadb")
	testenv.Need(t, err == nil, "the MariaDB client is not installed (scripts/install-deps.sh installs mariadb-client)")
	cg := testenv.NewCgroup(t)
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Host: "127.0.0.2"})
	is := testenv.NewIssuer(t)

	deployerFile := filepath.Join(t.TempDir(), "deployer")
	if err := os.WriteFile(deployerFile, []byte(testenv.MariaDBAppPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	body := identityBlock(is, "")
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: myInjectionRules(my.HostPort(), deployerFile), Body: body,
		Env: []string{"MY_READONLY_PASSWORD=" + testenv.MariaDBEdPassword}})
	worker := runnerWorker(t)

	// mariadb is the client's command line, quoted for sh.
	mariadb := func(user, password, query string, extra ...string) string {
		args := append(my.ClientArgs(user, password, query), extra...)
		for i, a := range args {
			args[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		return strings.Join(args, " ")
	}
	// job runs a shell command as a GitHub job of repo at ref.
	job := func(repo, ref, command string) (string, error) {
		t.Helper()
		is.SetClaims(map[string]any{"sub": "repo:" + repo + ":ref:" + ref, "repository": repo, "ref": ref, "run_id": "78"})
		cmd, done := cg.Command(t.Context(), worker, "-c", command+"; exit $?")
		defer done()
		cmd.Env = append(os.Environ(), "ACTIONS_ID_TOKEN_REQUEST_URL="+is.TokenURL(), "ACTIONS_ID_TOKEN_REQUEST_TOKEN="+is.RequestToken)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	const who = "SELECT CONCAT(CURRENT_USER(), ' ', IF(VARIABLE_VALUE = '', 'plain', 'tls')) FROM information_schema.SESSION_STATUS WHERE VARIABLE_NAME = 'Ssl_cipher'"

	// The main branch logs in as the native-password account, whatever
	// user and password the job gives, with or without TLS to the proxy;
	// the proxy's hop is TLS.
	for _, extra := range [][]string{{"--skip-ssl"}, nil} {
		out, err := job("acme/api", "refs/heads/main", mariadb("anyone", "wrong-password", who, extra...))
		if want := testenv.MariaDBAppUser + "@% tls"; err != nil || out != want {
			t.Errorf("main-branch job, client options %q: %v %q, want %q", extra, err, out, want)
		}
	}
	l := d.WaitLog(t, "authenticated with an injected credential", nil)
	if l.String("method") != "mysql_native_password" || l.String("rule") != "acme-api/credential/deployer" || l.String("client_user") != "anyone" {
		t.Errorf("injection line %v", l)
	}
	fl := d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("credential") == "deployer" })
	if fl.String("client_user") != "anyone" || fl.String("db_user") != testenv.MariaDBAppUser || fl.String("protocol") != "mysql" {
		t.Errorf("flow line: %v", fl)
	}
	// Other branches get the ed25519 account.
	if out, err := job("acme/api", "refs/heads/feature", mariadb("root", "", "SELECT CURRENT_USER()")); err != nil || out != testenv.MariaDBEdUser+"@%" {
		t.Errorf("feature-branch job: %v %q, want %s@%%", err, out, testenv.MariaDBEdUser)
	}
	d.WaitLog(t, "authenticated with an injected credential", func(l testenv.LogLine) bool { return l.String("method") == "client_ed25519" })
	// Another repository: a policy matches, but none grants a credential.
	out, err := job("acme/web", "refs/heads/main", mariadb(testenv.MariaDBAppUser, testenv.MariaDBAppPassword, "SELECT 1"))
	if err == nil || !strings.Contains(out, "ERROR 1045 (28000)") || !strings.Contains(out, `no database credential for this job on target "my"`) ||
		!strings.Contains(out, "no matched policy (everyone-else) grants") {
		t.Errorf("job of another repository: %v\n%s", err, out)
	}
	// No CI job at all: no verified identity.
	args := my.ClientArgs(testenv.MariaDBAppUser, testenv.MariaDBAppPassword, "SELECT 1")
	out, err = cg.Run(t, args[0], args[1:]...)
	if err == nil || !strings.Contains(out, "ERROR 1045 (28000)") || !strings.Contains(out, "verified CI identity") {
		t.Errorf("mariadb outside a job: %v\n%s", err, out)
	}

	// The recordings say which credential each session got, and whose
	// user name the client gave.
	var shows strings.Builder
	for _, sess := range listSessions(t, d, "--repo", "acme/api") {
		out, _ := d.Sluice(t, "sessions", "show", "--socket", d.Socket, sess.ID)
		shows.WriteString(out)
	}
	for _, want := range []string{"credential deployer injected", "credential ci_readonly injected"} {
		if !strings.Contains(shows.String(), want) {
			t.Errorf("no recorded session shows %q:\n%s", want, shows.String())
		}
	}
	status, _ := d.Sluice(t, "status", "--socket", d.Socket)
	assertNoSecret(t, d, status+shows.String(), testenv.MariaDBAppPassword, testenv.MariaDBEdPassword)
}
