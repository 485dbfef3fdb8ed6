package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/internal/testenv"
)

// SSH through Sluice with OpenSSH's own clients: a job in the hooked
// cgroup runs ssh, scp, sftp, rsync and git against sshd at its real
// address. The target "deploy" holds a credential (an SSH user CA the
// sshd trusts), so Sluice logs in itself and decides every request; the
// target "git" has none, so its flows are relayed opaquely and the job's
// own key logs in. The job's ssh trusts Sluice through the @cert-authority
// line sluice install writes, given to it as its GlobalKnownHostsFile.

const sshRules = `
target "deploy" {
  protocol    = "ssh"
  address     = [%q]
  known_hosts = %q
  credential "deploy" {
    user     = "deploy"
    ssh_auth = "certificate"
    key_file = %q
    policies = ["ci"]
  }
}
target "git" {
  protocol  = "ssh"
  address   = [%q]
  undecoded = "relay"
}
policy "ci" {
  targets = ["*"]
  when    = identity.repository == "acme/api"
  record  = "full"
  credential "deploy" {}
  deny "tunnels" {
    when   = contains(["direct_tcpip", "tcpip_forward", "agent_forward", "x11"], ssh.kind)
    reason = "no tunnels from CI"
  }
  deny "dumps" {
    when   = ssh.kind == "exec" && contains(ssh.programs, "pg_dump")
    reason = "database dumps do not leave over ssh"
  }
  deny "system-files" {
    when   = sftp.op != "" && (glob("/etc/*", sftp.path) || glob("/etc/*", sftp.target))
    reason = "system files stay on the host"
  }
}
default { action = "deny" }
`

type sshEnv struct {
	t       *testing.T
	d       *testenv.Daemon
	cg      *testenv.Cgroup
	is      *testenv.Issuer
	worker  string
	deploy  *testenv.SSHD // decoded
	git     *testenv.SSHD // relayed opaquely
	jobKey  string        // the job's own key, for the opaque target
	global  string        // the job's GlobalKnownHostsFile: the Sluice host CA line
	work    string
	hostDir string
}

func startSSHEnv(t *testing.T) *sshEnv {
	t.Helper()
	for _, tool := range []string{"ssh", "scp", "sftp", "rsync", "git", "ssh-keygen", "ssh-keyscan"} {
		_, err := exec.LookPath(tool)
		testenv.Need(t, err == nil, tool+" is not installed (scripts/install-deps.sh)")
	}
	e := &sshEnv{t: t, work: t.TempDir()}
	e.cg = testenv.NewCgroup(t)
	e.is = testenv.NewIssuer(t)
	e.worker = runnerWorker(t)

	// The user CA the decoded host trusts; its key is the credential.
	caPub, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(caPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(e.work, "user-ca")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshCA, _ := ssh.NewPublicKey(caPub)
	e.deploy = testenv.StartSSHD(t, testenv.SSHDOptions{Host: "127.0.0.5", Users: []string{"deploy"}, TrustedUserCAKeys: []ssh.PublicKey{sshCA}})
	e.deploy.GitRepo(t, "deploy", "app.git")
	if err := os.WriteFile(filepath.Join(e.deploy.Home("deploy"), "app.conf"), []byte("listen = 8080\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	// The job's own key, which only the opaque target sees.
	e.jobKey = filepath.Join(e.work, "job_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", e.jobKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	jobPub, _ := os.ReadFile(e.jobKey + ".pub")
	pk, _, _, _, err := ssh.ParseAuthorizedKey(jobPub)
	if err != nil {
		t.Fatal(err)
	}
	e.git = testenv.StartSSHD(t, testenv.SSHDOptions{Host: "127.0.0.6", Users: []string{"git"}, AuthorizedKeys: []ssh.PublicKey{pk}})
	e.git.GitRepo(t, "git", "lib.git")

	kh := filepath.Join(e.work, "sluice_known_hosts")
	if err := os.WriteFile(kh, []byte(e.deploy.KnownHostsLine()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rules := fmt.Sprintf(sshRules, e.deploy.Addr, kh, caFile, e.git.Addr)
	e.d = testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: e.cg, Rules: rules, Body: identityBlock(e.is, "")})

	// What sluice install writes into /etc/ssh/ssh_known_hosts, in a file
	// of the test's: the job's ssh reads it as its global known_hosts.
	out, err := e.d.Sluice(t, "ssh-ca", "--config", e.d.Config)
	line, _, _ := strings.Cut(out, "\n")
	if err != nil || !strings.HasPrefix(line, "@cert-authority * ") {
		t.Fatalf("sluice ssh-ca: %v\n%s", err, out)
	}
	e.global = filepath.Join(e.work, "ssh_known_hosts")
	if err := os.WriteFile(e.global, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.is.SetClaims(map[string]any{"sub": "repo:acme/api:ref:refs/heads/main", "repository": "acme/api", "ref": "refs/heads/main", "run_id": "77"})
	return e
}

// sshOpts are the job's ssh options: no user config, strict host key
// checking against the given known_hosts files.
func sshOpts(global, user string) string {
	return fmt.Sprintf("-F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=%s -o UserKnownHostsFile=%s", global, user)
}

// job runs a shell command as the CI job of acme/api and returns its
// combined output and error.
func (e *sshEnv) job(command string) (string, error) {
	e.t.Helper()
	cmd, done := e.cg.Command(e.t.Context(), e.worker, "-c", command+"; exit $?")
	defer done()
	cmd.Dir = e.work
	cmd.Env = append(os.Environ(), "ACTIONS_ID_TOKEN_REQUEST_URL="+e.is.TokenURL(),
		"ACTIONS_ID_TOKEN_REQUEST_TOKEN="+e.is.RequestToken, "HOME="+e.work)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ssh is the job's ssh command line towards the decoded host.
func (e *sshEnv) ssh(args string) string {
	return fmt.Sprintf("ssh %s -p %d %s", sshOpts(e.global, "/dev/null"), e.deploy.Port, args)
}

func TestSSHExec(t *testing.T) {
	e := startSSHEnv(t)
	host := "deploy@" + e.deploy.Host

	out, err := e.job(e.ssh(host + " 'cat app.conf'"))
	if err != nil || out != "listen = 8080\n" {
		t.Fatalf("ssh cat app.conf: %v %q", err, out)
	}
	// The session certificate Sluice minted names the job, in sshd's log.
	e.deploy.WaitLog(t, `ID sluice job=github:\S+ repository=acme/api ref=refs/heads/main run_id=77 identity=oidc flow=\d+ credential=deploy`)
	// OpenSSH's client lists CTR before GCM; Sluice offers it GCM alone,
	// which costs the proxy a fraction of CTR with an HMAC.
	e.d.WaitLog(t, "ssh session", func(l testenv.LogLine) bool { return l.String("job_cipher") == "aes128-gcm@openssh.com" })

	marker := filepath.Join(e.work, "dumped")
	out, err = e.job(e.ssh(host + " 'pg_dump prod > " + marker + "'"))
	if code := exitCode(err); code != 1 || !strings.Contains(out, "sluice: pg_dump prod > "+marker+" denied by rule ci/deny/dumps: database dumps do not leave over ssh") {
		t.Errorf("ssh pg_dump: exit %d, output %q", code, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the denied command ran on the host")
	}
	// The remote command's exit status and stderr come through.
	out, err = e.job(e.ssh(host + " 'echo out; echo err >&2; exit 7'"))
	if code := exitCode(err); code != 7 || (out != "out\nerr\n" && out != "err\nout\n") {
		t.Errorf("exit 7: exit %d, output %q", code, out)
	}
	// A flow that no policy matches (no CI job, so no identity) is
	// refused before the handshake, in SSH's terms.
	cmd, done := e.cg.Command(t.Context(), "sh", "-c", e.ssh(host+" true"))
	defer done()
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "sluice: connection refused by rule default") {
		t.Errorf("ssh outside a CI job: %v\n%s", err, out)
	}
}

func TestSSHForwardsRefused(t *testing.T) {
	e := startSSHEnv(t)
	host := "deploy@" + e.deploy.Host
	// -W (as -L and ProxyJump): a direct-tcpip channel.
	out, err := e.job(e.ssh("-W 127.0.0.2:5432 " + host))
	if err == nil || !strings.Contains(out, "administratively prohibited") || !strings.Contains(out, "ci/deny/tunnels") {
		t.Errorf("ssh -W: %v\n%s", err, out)
	}
	// -L: the local listener works, the channel through it is refused.
	// ssh -f goes to the background once its listener is up; the session
	// it keeps (sleep 2) ends by itself.
	out, err = e.job(e.ssh("-f -o ExitOnForwardFailure=yes -L 127.0.0.1:17999:127.0.0.2:5432 "+host+" sleep 2") +
		` && bash -c 'exec 3<>/dev/tcp/127.0.0.1/17999; cat <&3'`)
	// The backgrounded ssh logs the open failure where -f sends it, not
	// to the job; the job's connection ends with nothing read, and the
	// denial is in the daemon's log (checked below).
	if err != nil || out != "" {
		t.Errorf("ssh -L: %v\n%q, want the tunnel to end at once", err, out)
	}
	// -R: the remote listen is refused.
	out, err = e.job(e.ssh("-o ExitOnForwardFailure=yes -R 127.0.0.1:18000:127.0.0.2:5432 " + host + " true"))
	if err == nil || !strings.Contains(out, "remote port forwarding failed") {
		t.Errorf("ssh -R: %v\n%s", err, out)
	}
	// -A: the agent is not forwarded.
	out, err = e.job(`eval "$(ssh-agent -s)" >/dev/null; ` + e.ssh("-A "+host+" 'echo agent=${SSH_AUTH_SOCK:-none}'") + `; r=$?; ssh-agent -k >/dev/null; exit $r`)
	if err != nil || !strings.Contains(out, "agent=none") {
		t.Errorf("ssh -A: %v\n%s", err, out)
	}
	var kinds []string
	e.d.WaitLog(t, "statement denied", func(l testenv.LogLine) bool { return l.String("kind") == "agent_forward" })
	for _, l := range e.d.Logs(t) {
		if l.Message() == "statement denied" && l.String("rule") == "ci/deny/tunnels" {
			kinds = append(kinds, l.String("kind"))
		}
	}
	if got := strings.Join(kinds, " "); got != "direct_tcpip direct_tcpip tcpip_forward agent_forward" {
		t.Errorf("denials logged: %s; want -W's and -L's direct_tcpip, -R's tcpip_forward and -A's agent_forward", got)
	}
}

func TestSSHFileTransfers(t *testing.T) {
	e := startSSHEnv(t)
	host := "deploy@" + e.deploy.Host
	home := e.deploy.Home("deploy")
	payload := strings.Repeat("sluice carries this file\n", 40000)
	if err := os.WriteFile(filepath.Join(e.work, "up.txt"), []byte(payload), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := sshOpts(e.global, "/dev/null")
	port := e.deploy.Port

	// sftp: put, get, a get the ruleset refuses by path, and a symbolic
	// link into the refused directory, refused by its target.
	batch := filepath.Join(e.work, "batch")
	os.WriteFile(batch, []byte("put up.txt sftp-up.txt\nget sftp-up.txt sftp-back.txt\n-get /etc/hostname stolen\n-ln -s /etc/hostname etclink\n"), 0o644)
	out, err := e.job(fmt.Sprintf("sftp %s -P %d -b %s %s", opts, port, batch, host))
	if err != nil || !strings.Contains(out, "denied by rule ci/deny/system-files") {
		t.Errorf("sftp: %v\n%s", err, out)
	}
	assertFile(t, filepath.Join(home, "sftp-up.txt"), payload)
	assertFile(t, filepath.Join(e.work, "sftp-back.txt"), payload)
	if _, err := os.Stat(filepath.Join(e.work, "stolen")); err == nil {
		t.Error("the refused sftp get wrote a file")
	}
	if _, err := os.Lstat(filepath.Join(home, "etclink")); err == nil {
		t.Error("the refused symbolic link into /etc was made")
	}
	// scp: SFTP underneath (OpenSSH 9), and the old protocol (-O), which
	// is an exec of scp -t.
	for _, mode := range []string{"", "-O"} {
		dst := "scp" + mode + ".txt"
		if out, err := e.job(fmt.Sprintf("scp %s %s -P %d up.txt %s:%s", mode, opts, port, host, dst)); err != nil {
			t.Errorf("scp %s: %v\n%q", mode, err, out)
		}
		assertFile(t, filepath.Join(home, dst), payload)
	}
	if out, err := e.job(fmt.Sprintf("scp %s -P %d %s:/etc/hostname .", opts, port, host)); err == nil || !strings.Contains(out, "ci/deny/system-files") {
		t.Errorf("scp of /etc/hostname: %v\n%s", err, out)
	}
	// rsync over ssh.
	if out, err := e.job(fmt.Sprintf("rsync -e 'ssh %s -p %d' up.txt %s:rsync.txt", opts, port, host)); err != nil {
		t.Errorf("rsync: %v\n%s", err, out)
	}
	assertFile(t, filepath.Join(home, "rsync.txt"), payload)

	// git over the decoded target: clone, commit, push, fetch.
	gitSSH := fmt.Sprintf("GIT_SSH_COMMAND='ssh %s -p %d'", opts, port)
	script := gitSSH + " git clone -q " + host + ":app.git app && cd app && git -c user.name=ci -c user.email=ci@example.invalid commit -q --allow-empty -m from-ci && " +
		gitSSH + " git push -q origin HEAD && " + gitSSH + " git fetch -q && git log --oneline | wc -l"
	if out, err := e.job(script); err != nil || strings.TrimSpace(out) != "2" {
		t.Errorf("git over the decoded target: %v\n%s", err, out)
	}
	// git over the opaque target, with the job's own key.
	gitOpaque := fmt.Sprintf("GIT_SSH_COMMAND='ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -i %s -p %d'", e.jobKey, e.git.Port)
	if out, err := e.job(gitOpaque + " git clone -q git@" + e.git.Host + ":lib.git lib && ls -d lib/.git"); err != nil {
		t.Errorf("git over the opaque target: %v\n%s", err, out)
	}
	l := e.d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("target") == "git" })
	if v, ok := l["inspected"].(bool); !ok || v {
		t.Errorf("opaque flow line: %v", l)
	}
}

// TestSSHShellRecorded: a shell with a terminal is recorded as one, and
// its asciicast export plays the terminal back.
func TestSSHShellRecorded(t *testing.T) {
	e := startSSHEnv(t)
	// The job's ssh runs on a terminal of its own (script(1) gives it
	// one), so it asks for a remote terminal as an interactive ssh does;
	// the keystrokes come through that terminal.
	out, err := e.job("printf 'echo shell-says-$((6*7))\\nexit\\n' | script -qec " + shellQuote(e.ssh("-t deploy@"+e.deploy.Host)) + " /dev/null")
	if err != nil || !strings.Contains(out, "shell-says-42") {
		t.Fatalf("ssh -tt: %v\n%s", err, out)
	}
	var id string
	testenv.WaitFor(t, 10*time.Second, "a sealed ssh session", func() bool {
		for _, s := range listSessions(t, e.d) {
			if s.Target == "deploy" && !s.End.IsZero() {
				id = s.ID
				return true
			}
		}
		return false
	})
	show, err := e.d.Sluice(t, "sessions", "show", "--socket", e.d.Socket, id)
	if err != nil || !strings.Contains(show, "shell") {
		t.Errorf("sessions show: %v\n%s", err, show)
	}
	cast, err := e.d.Sluice(t, "export", id, "--socket", e.d.Socket, "--format", "asciicast")
	if err != nil || !strings.HasPrefix(cast, `{"version":2`) || !strings.Contains(cast, "shell-says-42") {
		t.Fatalf("export asciicast: %v\n%s", err, cast)
	}
	if _, err := exec.LookPath("asciinema"); err == nil {
		f := filepath.Join(t.TempDir(), "s.cast")
		os.WriteFile(f, []byte(cast), 0o644)
		if out, err := testenv.AsciinemaCat(t, f); err != nil || !strings.Contains(out, "shell-says-42") {
			t.Errorf("asciinema cat: %v\n%s", err, out)
		}
	} else if testenv.Required() {
		t.Error("asciinema is not installed (scripts/install-deps.sh)")
	}
}

// TestSSHKnownHosts: how OpenSSH's client takes Sluice's host
// certificate when it also knows something about the host.
func TestSSHKnownHosts(t *testing.T) {
	e := startSSHEnv(t)
	host := "deploy@" + e.deploy.Host
	run := func(global, user, extra string) (string, error) {
		// ssh takes the first value of an option: extra comes first.
		return e.job(fmt.Sprintf("ssh %s %s -p %d %s true", extra, sshOpts(global, user), e.deploy.Port, host))
	}
	// The host's real key pinned in the user's known_hosts: the host CA's
	// certificate is still accepted.
	pinned := filepath.Join(e.work, "pinned")
	os.WriteFile(pinned, []byte(e.deploy.KnownHostsLine()+"\n"), 0o644)
	if out, err := run(e.global, pinned, ""); err != nil {
		t.Errorf("pinned real key and the CA line: %v\n%s", err, out)
	}
	// Without the CA line and with the real key pinned: refused, as any
	// man in the middle must be.
	if out, err := run("/dev/null", pinned, ""); err == nil {
		t.Errorf("pinned real key and no CA line: connected\n%s", out)
	}
	// ssh-keyscan through Sluice gets Sluice's plain host key; a job that
	// pins what it scanned connects even without the CA line.
	scanned := filepath.Join(e.work, "scanned")
	out, err := e.job(fmt.Sprintf("ssh-keyscan -p %d %s > %s", e.deploy.Port, e.deploy.Host, scanned))
	if b, _ := os.ReadFile(scanned); err != nil || !strings.Contains(string(b), "ssh-ed25519") {
		t.Fatalf("ssh-keyscan: %v\n%s%s", err, out, b)
	}
	if out, err := run("/dev/null", scanned, ""); err != nil {
		t.Errorf("keyscan, then strict: %v\n%s", err, out)
	}
	// StrictHostKeyChecking=no with nothing known: connects.
	if out, err := run("/dev/null", "/dev/null", "-o StrictHostKeyChecking=no"); err != nil {
		t.Errorf("StrictHostKeyChecking=no: %v\n%s", err, out)
	}
}

// shellQuote quotes s as one word for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("%s: %d bytes (%v), want %d", path, len(b), err, len(want))
	}
}
