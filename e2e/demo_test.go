package e2e

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestDemo runs the README's demo (scripts/demo.sh, what `make demo`
// runs) with the binaries under test, and checks that each numbered step
// shows what the README's numbered claim says it shows: the demo is the
// README's proof, so a change that breaks a claim fails here. Needs root
// (the demo makes its own cgroups, attaches to them and starts a private
// PostgreSQL, MariaDB, dockerd, sshd and Kubernetes API server), Docker
// (the docker.io package), OpenSSH (openssh-server, openssh-client) and
// kube-apiserver, etcd and kubectl built by scripts/build-kube.sh; it
// removes everything it made.
func TestDemo(t *testing.T) {
	testenv.RequireRoot(t)
	text, steps := runDemo(t, "scripts/demo.sh", 5*time.Minute)
	if len(steps) != 16 {
		t.Fatalf("the demo showed %d numbered steps, want 16 (the README's claims)\n%s", len(steps), text)
	}
	masked := `[0-9a-f]{8}@example\.com`
	for _, c := range []struct {
		step int
		want []string // regular expressions the step's output must match
		not  []string // and must not
	}{
		{1, []string{`127\.0\.0\.2 \|`, `"@message":"flow"`, `"orig_dst":"127\.0\.0\.2:\d+"`, `"comm":"psql"`, `"exe":"[^"]*psql"`, `"db_user":"postgres"`, `"statements":1`, `"bytes_from_client":\d+`}, nil},
		{2, []string{`direct, not through sluice`, `before: (\d+), after: (\d+)`}, nil},
		{3, []string{`(?s)42501: sluice: statement denied by rule "ci-jobs/deny/no-ddl".*42501: sluice: statement denied by rule "ci-jobs/deny/no-bulk-delete".*users_still_there.*BEGIN.*42501: sluice: statement denied by rule "ci-jobs/deny/no-bulk-delete".*ROLLBACK.*users_still_there.*DO .*42501: sluice: statement denied by rule "ci-jobs/deny/no-ddl"`,
			`users still there \(checked directly\): 2`}, []string{`users_still_there\s*\n-+\n\s*0`}},
		{4, []string{`1 \| ` + masked + ` \| ` + masked + ` \| [0-9a-f]{8}@EXAMPLE\.COM`, `ada@example\.com`, `batch ok ` + masked, `pipelined ok ` + masked}, nil},
		{5, []string{`pending\s+before\s+ci-jobs/hold/exports`, `held for approval`, `approved`, `(?s)after approval:.*\n1\t` + masked}, []string{`\t(ada|alan)@example\.com`}},
		{6, []string{`statements 6, denied 2`, `=> BEGIN;\n\s+\[allow\]`, `\[deny\] rule ci-jobs/deny/no-bulk-delete`, `ok, sealed`}, []string{`=> BEGIN;\n\s+\[mask\]`, `ALTERED|altered`}},
		{7, []string{` app\s+\|\s+2`, `authenticated with an injected credential`, `connection denied by rule "default"`, `the app password appears in no log line and no recording`,
			`\|\s+64MB\n`, `\|\s+4MB\n`, `"@message":"server connection pooled"`, `"upstream_pool":"reused, released"`}, nil},
		{8, []string{`ok: 5 targets`, `10 passed, 0 failed`, `decision: deny by ci-jobs/deny/no-ddl`, `connection denied by rule "default"`, `"@message":"flow denied"`, `oops\.hcl:1:\d+: error`, `(?s)old rules still refuse a DROP:.*42501: sluice: statement denied by rule "ci-jobs/deny/no-ddl"`}, nil},
		{9, []string{`ok\s+daemon`, `ok\s+pins`, `ok\s+containers`, `sluice_flows_total\{outcome="served"`, `sluice_verdicts_total\{rule="ci-jobs/deny/no-ddl",verdict="deny"\}`, `sluice_statement_latency_seconds_count`}, nil},
		{10, []string{`ERROR 1227 \(42000\).*sluice: statement denied by rule "ci-jobs-mariadb/deny/no-ddl"`,
			`\n1\tAda Lovelace\t` + masked, `pending\s+before\s+ci-jobs-mariadb/hold/deletes`,
			`(?s)after the refusal:.*ERROR 1227 \(42000\)[^\n]*ci-jobs-mariadb/hold/deletes`, `customers\n2\n`, `\[deny\]`},
			[]string{`\t(ada|alan)@example\.com`}},
		{11, []string{`^== 11\. Container jobs: a docker run of psql from the job`,
			`docker run --rm --name ci-job-drop .*psql .*DROP TABLE users\nERROR:  42501: sluice: statement denied by rule "ci-jobs/deny/no-ddl"`,
			`\n\s+1 \| ` + masked,
			`"@message":"flow".*"container_id":"[0-9a-f]{64}","container_image":"sluice-demo/psql:1","container_name":"/?ci-job-drop".*"denied":1.*"host_netns":false`,
			`users still there \(checked directly\): 2`},
			[]string{`(ada|alan)@example\.com`, `WARNING: IPv4 forwarding`}},
		// The job's shell is in the cgroup it fled to when its psql's DROP
		// is refused; the move is alerted, recorded and counted.
		{12, []string{`^== 12\. A root job that moves itself out of its cgroup is still intercepted`,
			`\n0::/sluice-demo-\d+/elsewhere\nERROR:  42501: sluice: statement denied by rule "ci-jobs/deny/no-ddl"`,
			`"@message":"tamper: a job process was moved out of its job cgroup".*"job_cgroup":"sluice-demo-\d+/runner".*"kind":"cgroup_move".*"pid":\d+.*"to_cgroup":"/?sluice-demo-\d+/elsewhere"`,
			`sealed\s+cgroup_move\s+sh\[\d+\] uid 0`, `target\s+cgroup_move \(tamper\)`,
			`\nsluice_tamper_events_total\{kind="cgroup_move"\} 1\n`},
			[]string{`\nDROP TABLE\n`}},
		// The job's ssh at the deploy host's real address: Sluice logs in
		// with a certificate naming the job (in sshd's own log), runs the
		// command, refuses the dump and the tunnel by rule, and records
		// the shell, which exports as asciicast v2. The host's /etc
		// changes stay in sshd's mount namespace.
		{13, []string{`^== 13\. SSH: `,
			`\n@cert-authority \* ssh-ed25519 \S+ sluice-ssh-host-ca\n`,
			`\$ ssh \$SSH_OPTS deploy@127\.0\.0\.5 'cat /etc/app\.conf'\n# the deploy host's application config\nlisten = 8080\nlog_level = info\n`,
			`\nAccepted publickey for deploy from \S+ port \d+ ssh2: ED25519-CERT SHA256:\S+ ID sluice job=github:\S+ repository=acme/api ref=refs/heads/main run_id=1001 (\S+ )*identity=oidc flow=\d+ credential=deploy \(serial \d+\) CA ED25519 `,
			`\nsluice: pg_dump -U postgres prod denied by rule acme-api-deploy/deny/ssh-database-dumps: database dumps are not allowed over SSH[^\n]*\nexit status 1; prod\.sql: 0 bytes\n`,
			`\$ cat tunnel\.log\npsql: error: connection to server at "127\.0\.0\.1", port \d+ failed: server closed the connection unexpectedly`,
			`\nchannel \d+: open failed: administratively prohibited: sluice: direct-tcpip 127\.0\.0\.2:\d+ denied by rule acme-api-deploy/deny/ssh-tunnels: `,
			`\| ssh \$SSH_OPTS -tt deploy@127\.0\.0\.5\n(?s:.*)\nlog_level = debug\n`,
			`sealed\s+deploy-host\s+127\.0\.0\.5:\d+\s+ssh\[\d+\] uid 0\s+oidc acme/api@main run 1001`,
			`recording sealed, level full`, `-- note: credential deploy injected \(rule acme-api-deploy/credential/deploy\)`, `\n=> shell\n\s+\[allow\]`,
			// sessions show plays the terminal back; the cast holds what
			// was typed and what the terminal showed.
			`\n   \| log_level = debug\n(?s:.*)\(exit 0, \d+ bytes, `,
			`\n\[[0-9.]+, "i", "sed -i s/info/debug/ /etc/app\.conf\\n`,
			`\n\$ head -3 shell\.cast\n\{"version":2,"width":\d+,"height":\d+,`,
			`this machine's own /etc has no user deploy and no app\.conf`},
			[]string{`Host key verification failed`, `Permission denied`, `Could not chdir`}},
		// The job's kubectl, with sluice kubeconfig's kubeconfig (no
		// credential), reaches the API server through Sluice, which
		// presents the service account's token; the default ruleset's
		// Kubernetes rules refuse get secrets -A, mask the secret, and
		// hold the exec until root approves it; the exec's terminal is in
		// its recording.
		{14, []string{`^== 14\. Kubernetes: `,
			`\n\s+tls-server-name: kubernetes\.sluice\.internal\n\s+token: sluice-injects-credentials\n`,
			`\n\$ kubectl get pods\nNAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\nweb\s+1/1\s+Running\s`,
			`\nUsername\s+system:serviceaccount:ci:deployer\n`,
			`\nError from server \(Forbidden\): sluice: list secrets in all namespaces denied by rule acme-api-k8s/deny/k8s-secrets-all-namespaces: [^\n]+\nexit status 1\n`,
			`\n\$ kubectl get secret app -o yaml\napiVersion: v1\ndata:\n  owner: \S+\n  password: \S+\nkind: Secret\n`,
			`\nh-\w+\s+pending\s+before\s+acme-api-k8s/hold/k8s-exec\s+demo-cluster\s+kubectl\[\d+\] uid 65534 acme/api\s`,
			`\nh-\w+: approved\n`,
			`(?s)after approval:\n.*\n(# )?the pod says 42\n`,
			`sealed\s+demo-cluster\s+127\.0\.0\.1:\d+\s+kubectl\[\d+\] uid 65534\s+oidc acme/api@main run 1001`,
			`-- note: credential deployer injected \(rule acme-api-k8s/credential/deployer\)`,
			`\n=> GET /api/v1/namespaces/app/pods/web/exec\?command=sh&[^\n]*\n\s+\[hold\] rule acme-api-k8s/hold/k8s-exec: `,
			`-- note: hold \(before\): approved by root`,
			`\n\$ head -3 exec\.cast\n\{"version":2,"width":\d+,"height":\d+,`,
			`(?s)\$ head -3 exec\.cast\n.*(\nthe pod says 42\n|# the pod says 42|asciinema is not installed here)`},
			// The secret's values as the server holds them (base64).
			[]string{`aHVudGVyMi1wcm9kLWRhdGFiYXNlLXBhc3N3b3Jk`, `b3BzQGV4YW1wbGUuY29t`, `ops@example\.com`}},
		{15, []string{`Connection refused`}, []string{`\n1\n`}},
		{16, []string{`interception removed`, `after uninstall: direct again`}, nil},
	} {
		s := steps[c.step]
		for _, w := range c.want {
			if !regexp.MustCompile(w).MatchString(s) {
				t.Errorf("demo step %d does not show %q:\n%s", c.step, w, s)
			}
		}
		for _, w := range c.not {
			if regexp.MustCompile(w).MatchString(s) {
				t.Errorf("demo step %d shows %q, which it must not:\n%s", c.step, w, s)
			}
		}
	}
	// Step 2: no flow was logged for the direct psql.
	if m := regexp.MustCompile(`before: (\d+), after: (\d+)`).FindStringSubmatch(steps[2]); m != nil && m[1] != m[2] {
		t.Errorf("demo step 2: the psql outside the cgroup was logged as a flow (%s -> %s)", m[1], m[2])
	}
}

// runDemo runs a demo script from the repository root with the binaries
// under test, fails the test if it fails or writes terminal escapes to a
// pipe, and returns its output whole and split at its numbered step titles
// ("== N. "), by step number.
func runDemo(t *testing.T, script string, timeout time.Duration) (string, map[int]string) {
	t.Helper()
	bin := testenv.Binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "BIN="+bin)
	out, err := cmd.CombinedOutput()
	text := string(out)
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, text)
	}
	if strings.Contains(text, "\x1b[") {
		t.Errorf("%s wrote terminal escapes to a pipe", script)
	}
	steps := map[int]string{}
	title := regexp.MustCompile(`(?m)^== (\d+)\. `)
	idx := title.FindAllStringSubmatchIndex(text, -1)
	for i, m := range idx {
		n, _ := strconv.Atoi(text[m[2]:m[3]])
		end := len(text)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		steps[n] = text[m[0]:end]
	}
	return text, steps
}
