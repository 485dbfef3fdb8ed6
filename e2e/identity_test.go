package e2e

import (
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

// runnerWorker copies /bin/sh to a file named Runner.Worker (the comm of
// GitHub's job process) and returns its path.
func runnerWorker(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sluice-runner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	sh, err := os.ReadFile("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "Runner.Worker")
	if err := os.WriteFile(p, sh, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// identityBlock is the daemon's identity block trusting the test issuer
// (audience sluice, its token endpoint on loopback), with issuerExtra
// added to the issuer (bound_claims, say).
func identityBlock(is *testenv.Issuer, issuerExtra string) string {
	if issuerExtra != "" {
		issuerExtra = "    " + issuerExtra + "\n"
	}
	return fmt.Sprintf("identity {\n  issuer %q {\n    audience = \"sluice\"\n%s  }\n  token_host_allowlist = [\"127.0.0.1\"]\n  ca_file = %q\n}\n", is.URL, issuerExtra, is.CAFile)
}

// TestIdentityGitHubJob: psql run by a job under a Runner.Worker whose
// environment lets it request a GitHub-shaped OIDC token carries the
// token's verified claims; a ruleset that allows only refs/heads/main
// lets it through and refuses the same psql under a token for another ref.
func TestIdentityGitHubJob(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	is := testenv.NewIssuer(t)
	rules := fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "main-only" {
  targets = ["pg"]
  when    = identity.repository == "acme/api" && identity.ref == "refs/heads/main"
}

default {
  action = "deny"
  reason = "only main of acme/api may reach this database"
}
`, pg.Addr())
	body := identityBlock(is, "bound_claims = { runner_environment = \"self-hosted\" }")
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules, Body: body})
	worker := runnerWorker(t)

	job := func(ref string) (string, error) {
		t.Helper()
		is.SetClaims(map[string]any{"sub": "repo:acme/api:ref:" + ref, "repository": "acme/api", "ref": ref,
			"run_id": "4242", "actor": "octocat", "runner_environment": "self-hosted"})
		psql := strings.Join(pg.PsqlArgs("", 0, "select 'from the job'"), " ")
		cmd, done := cg.Command(t.Context(), worker, "-c", psql+"; exit $?")
		defer done()
		cmd.Env = append(os.Environ(), "ACTIONS_ID_TOKEN_REQUEST_URL="+is.TokenURL(),
			"ACTIONS_ID_TOKEN_REQUEST_TOKEN="+is.RequestToken, "GITHUB_REPOSITORY=acme/forged")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	start := time.Now()
	if out, err := job("refs/heads/main"); err != nil || !strings.Contains(out, "from the job") {
		t.Fatalf("job on main: %v\n%s", err, out)
	}
	t.Logf("first connection of a job (token request and verification included): %s", time.Since(start))
	var sess store.Session
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if l := listSessions(t, d, "--repo", "acme/api"); len(l) == 1 && l[0].Status == store.StatusSealed {
			sess = l[0]
			break
		}
	}
	if sess.IdentityLevel != "oidc" || sess.Ref != "refs/heads/main" || sess.RunID != "4242" || sess.Actor != "octocat" {
		t.Fatalf("session identity = %+v", sess)
	}
	show, _ := d.Sluice(t, "sessions", "show", "--socket", d.Socket, sess.ID)
	for _, want := range []string{"identity  oidc job github:", "repository = acme/api", "ref = refs/heads/main", "run_id = 4242",
		"actor = octocat", "unverified hint GITHUB_REPOSITORY = acme/forged"} {
		if !strings.Contains(show, want) {
			t.Errorf("sessions show lacks %q:\n%s", want, show)
		}
	}

	out, err := job("refs/heads/feature")
	if err == nil || !strings.Contains(out, `connection denied by rule "default"`) {
		t.Errorf("job on a feature branch: %v\n%s\nwant the connection denied", err, out)
	}

	// Outside any job: no verified identity, so no identity.* rule matches.
	out2, _, err := psqlIn(t, cg, 0, pg.PsqlArgs("", 0, "select 1"))
	if err == nil || !strings.Contains(out2, "connection denied") {
		t.Errorf("psql outside a job: %v\n%s", err, out2)
	}
	l := d.WaitLog(t, "flow denied", func(l testenv.LogLine) bool { return l.String("identity") == "none" })
	if l.String("identity_reason") != "no CI job ancestor" {
		t.Errorf("flow denied outside a job: %v", l)
	}
	_ = exec.Command
}
