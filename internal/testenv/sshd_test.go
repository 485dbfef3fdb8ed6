package testenv_test

// These tests start real OpenSSH sshd servers and drive them with the
// real clients, directly (no Sluice in between), to prove the harness
// that the SSH end-to-end tests use. They need root (a mount namespace
// per sshd, network namespaces for test hosts, an sshd that switches
// users), the openssh-server, openssh-client, rsync and git packages
// (scripts/install-deps.sh), and skip under -short, and without root
// unless SLUICE_E2E=required. TestSSHKey needs only ssh-keygen.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/internal/testenv"
)

// needTools skips (or fails, under SLUICE_E2E=required) without the
// given programs.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		testenv.Need(t, err == nil, tool+" is not installed (scripts/install-deps.sh)")
	}
}

// run runs argv in dir with extra environment, and returns its standard
// output and, on failure, an error that carries its standard error.
func run(t *testing.T, dir string, env []string, argv ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), testenv.GitEnv()...), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), &runError{err, strings.TrimSpace(stderr.String())}
	}
	return string(out), nil
}

type runError struct {
	err    error
	stderr string
}

func (e *runError) Error() string { return e.err.Error() + ": " + e.stderr }
func (e *runError) Unwrap() error { return e.err }

// mustRun is run that fails t.
func mustRun(t *testing.T, dir string, env []string, argv ...string) string {
	t.Helper()
	out, err := run(t, dir, env, argv...)
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(argv, " "), err)
	}
	return out
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

func checkFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || string(b) != want {
		t.Errorf("%s: %q (%v), want %q", path, b, err, want)
	}
}

// TestSSHKey: a key pair and a user certificate made by ssh-keygen -s
// carry what the test asked for.
func TestSSHKey(t *testing.T) {
	needTools(t, "ssh-keygen")
	ca, k := testenv.NewSSHKey(t), testenv.NewSSHKey(t)
	path := ca.SignUserKey(t, k, testenv.SSHCertOptions{KeyID: "sluice:job=42", Principals: []string{"deploy", "ops"}, Serial: 7})
	if path != k.Path+"-cert.pub" {
		t.Errorf("certificate at %s, want %s", path, k.Path+"-cert.pub")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := pub.(*ssh.Certificate)
	if !ok {
		t.Fatalf("%s holds a %T, want a certificate", path, pub)
	}
	if cert.CertType != ssh.UserCert || cert.KeyId != "sluice:job=42" || cert.Serial != 7 ||
		strings.Join(cert.ValidPrincipals, ",") != "deploy,ops" ||
		!bytes.Equal(cert.Key.Marshal(), k.Public.Marshal()) || !bytes.Equal(cert.SignatureKey.Marshal(), ca.Public.Marshal()) {
		t.Errorf("certificate %+v", cert)
	}
	now := uint64(time.Now().Unix())
	if cert.ValidAfter > now || cert.ValidBefore < now+30*60 {
		t.Errorf("certificate valid from %d to %d, want now (%d) and the next hour", cert.ValidAfter, cert.ValidBefore, now)
	}
	// The private key file is one OpenSSH reads.
	if out, err := exec.Command("ssh-keygen", "-y", "-f", k.Path).Output(); err != nil ||
		!strings.HasPrefix(string(out), strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k.Public)))) {
		t.Errorf("ssh-keygen -y -f %s: %v %q", k.Path, err, out)
	}
}

// TestSSHD: every client the SSH tests use works against a loopback
// sshd, as test users that exist only for it, with a plain key, a user
// certificate and a password; the machine's account and login files are
// left as they were.
func TestSSHD(t *testing.T) {
	testenv.RequireRoot(t)
	needTools(t, "ssh", "scp", "sftp", "rsync", "git", "ssh-keygen")
	etcBefore := map[string][]byte{}
	for _, f := range []string{"/etc/passwd", "/etc/shadow", "/etc/group", "/var/log/wtmp", "/var/log/lastlog", "/var/log/btmp"} {
		etcBefore[f], _ = os.ReadFile(f)
	}

	key, ca, certKey, stranger := testenv.NewSSHKey(t), testenv.NewSSHKey(t), testenv.NewSSHKey(t), testenv.NewSSHKey(t)
	s := testenv.StartSSHD(t, testenv.SSHDOptions{
		Users:             []string{"deploy", "ops"},
		AuthorizedKeys:    []ssh.PublicKey{key.Public},
		TrustedUserCAKeys: []ssh.PublicKey{ca.Public},
		Passwords:         map[string]string{"ops": "ops-secret"},
	})
	if s.Host != "127.0.0.1" || s.Port == 0 || s.Addr != "127.0.0.1:"+strconv.Itoa(s.Port) {
		t.Fatalf("sshd at %q (host %q, port %d)", s.Addr, s.Host, s.Port)
	}
	if want := "[127.0.0.1]:" + strconv.Itoa(s.Port) + " ssh-ed25519 "; !strings.HasPrefix(s.KnownHostsLine(), want) {
		t.Errorf("KnownHostsLine %q, want it to start %q", s.KnownHostsLine(), want)
	}
	if l := s.KnownHostsLineFor("198.18.0.2:22"); !strings.HasPrefix(l, "198.18.0.2 ssh-ed25519 ") {
		t.Errorf("KnownHostsLineFor port 22: %q", l)
	}
	work := t.TempDir()
	deploy := "deploy@" + s.Host
	sshRun := func(identity string, args ...string) (string, error) {
		t.Helper()
		return run(t, work, nil, append(append([]string{"ssh"}, s.ClientOptions(identity)...), args...)...)
	}

	t.Run("exec", func(t *testing.T) {
		out, err := sshRun(key.Path, deploy, `echo "$USER $HOME"; pwd; grep -c "^deploy:" /etc/passwd`)
		home := s.Home("deploy")
		if err != nil || out != "deploy "+home+"\n"+home+"\n1\n" {
			t.Errorf("ssh exec: %v %q", err, out)
		}
		if _, err := sshRun(key.Path, deploy, "echo err >&2; exit 7"); exitCode(err) != 7 || !strings.HasSuffix(err.Error(), ": err") {
			t.Errorf("ssh exit 7: %v", err)
		}
		// A key nobody authorised is refused.
		if _, err := sshRun(stranger.Path, deploy, "true"); exitCode(err) != 255 || !strings.Contains(err.Error(), "Permission denied") {
			t.Errorf("ssh with an unauthorised key: %v", err)
		}
	})

	t.Run("certificate", func(t *testing.T) {
		// certKey is not in authorized_keys: only its certificate lets it in.
		ca.SignUserKey(t, certKey, testenv.SSHCertOptions{KeyID: "sluice job=42 repository=acme/api", Principals: []string{"deploy"}, Serial: 7})
		if out, err := sshRun(certKey.Path, deploy, "echo $USER"); err != nil || out != "deploy\n" {
			t.Fatalf("ssh with a certificate: %v %q", err, out)
		}
		line := s.WaitLog(t, `^Accepted publickey for deploy from 127\.0\.0\.1 port \d+ ssh2: ED25519-CERT SHA256:\S+ ID sluice job=42 repository=acme/api \(serial 7\) CA ED25519 `+regexp.QuoteMeta(ssh.FingerprintSHA256(ca.Public))+`$`)
		t.Logf("sshd: %s", line)
		// Its principal is deploy, not ops.
		if _, err := sshRun(certKey.Path, "ops@"+s.Host, "true"); exitCode(err) != 255 {
			t.Errorf("the certificate logged in as ops: %v", err)
		}
	})

	t.Run("pty", func(t *testing.T) {
		out, err := sshRun(key.Path, "-tt", deploy, "tty")
		if err != nil || !regexp.MustCompile(`^/dev/pts/\d+\r\n$`).MatchString(out) {
			t.Errorf("ssh -tt: %v %q", err, out)
		}
		// The login with a terminal went into the test's wtmp.
		if fi, err := os.Stat(filepath.Join(s.Dir, "var-log", "wtmp")); err != nil || fi.Size() == 0 {
			t.Errorf("the test's wtmp: %v, %v", fi, err)
		}
	})

	payload := strings.Repeat("sluice harness payload\n", 20000)
	if err := os.WriteFile(filepath.Join(work, "up.txt"), []byte(payload), 0o644); err != nil {
		t.Fatal(err)
	}
	home := s.Home("deploy")
	t.Run("scp", func(t *testing.T) {
		for _, mode := range []string{"-s", "-O"} { // SFTP (OpenSSH 9's default) and the old protocol, exec scp -t/-f
			scp := append([]string{"scp", mode}, s.ClientOptions(key.Path)...)
			name := "scp" + mode + ".txt"
			mustRun(t, work, nil, append(scp, "up.txt", deploy+":"+name)...)
			checkFile(t, filepath.Join(home, name), payload)
			mustRun(t, work, nil, append(scp, deploy+":"+name, name+".back")...)
			checkFile(t, filepath.Join(work, name+".back"), payload)
		}
	})

	t.Run("sftp", func(t *testing.T) {
		batch := filepath.Join(work, "batch")
		os.WriteFile(batch, []byte("put up.txt sftp.txt\nget sftp.txt sftp-back.txt\nls -1 sftp.txt\n"), 0o644)
		args := append(append([]string{"sftp"}, s.ClientOptions(key.Path)...), "-b", batch, deploy)
		if out := mustRun(t, work, nil, args...); !strings.Contains(out, "sftp.txt") {
			t.Errorf("sftp -b: %q", out)
		}
		checkFile(t, filepath.Join(home, "sftp.txt"), payload)
		checkFile(t, filepath.Join(work, "sftp-back.txt"), payload)
	})

	t.Run("rsync", func(t *testing.T) {
		src := filepath.Join(work, "tree")
		os.MkdirAll(filepath.Join(src, "sub"), 0o755)
		os.WriteFile(filepath.Join(src, "sub", "a.txt"), []byte(payload), 0o644)
		mustRun(t, work, nil, "rsync", "-a", "-e", s.SSHCommand(key.Path), "tree/", deploy+":tree/")
		checkFile(t, filepath.Join(home, "tree", "sub", "a.txt"), payload)
		mustRun(t, work, nil, "rsync", "-a", "-e", s.SSHCommand(key.Path), deploy+":tree/", "tree-back/")
		checkFile(t, filepath.Join(work, "tree-back", "sub", "a.txt"), payload)
	})

	t.Run("git", func(t *testing.T) {
		repo := s.GitRepo(t, "deploy", "app.git")
		if !regexp.MustCompile(`^ssh://deploy@127\.0\.0\.1:\d+/~/app\.git$`).MatchString(repo.URL) || repo.Path != filepath.Join(home, "app.git") {
			t.Errorf("repo %+v", repo)
		}
		env := []string{"GIT_SSH_COMMAND=" + s.SSHCommand(key.Path)}
		mustRun(t, work, env, "git", "clone", "-q", repo.URL, "app")
		if head := strings.TrimSpace(mustRun(t, work, nil, "git", "-C", "app", "rev-parse", "HEAD")); head != repo.Head {
			t.Errorf("cloned HEAD %s, want %s", head, repo.Head)
		}
		checkFile(t, filepath.Join(work, "app", "README"), "sluice test repository\n")
		mustRun(t, work, nil, "git", "-C", "app", "commit", "-q", "--allow-empty", "-m", "pushed over ssh")
		mustRun(t, work, env, "git", "-C", "app", "push", "-q", "origin", testenv.GitBranch)
		pushed := strings.TrimSpace(mustRun(t, work, nil, "git", "-C", "app", "rev-parse", "HEAD"))
		if got := strings.TrimSpace(mustRun(t, work, nil, "git", "-C", repo.Path, "rev-parse", testenv.GitBranch)); got != pushed {
			t.Errorf("bare repository at %s after the push, want %s", got, pushed)
		}
		// The scp-like form a job writes, with the port from the ssh command.
		mustRun(t, work, env, "git", "clone", "-q", deploy+":app.git", "app2")
		mustRun(t, work, nil, "git", "-C", "app2", "reset", "-q", "--hard", repo.Head)
		mustRun(t, work, env, "git", "-C", "app2", "fetch", "-q")
		if got := strings.TrimSpace(mustRun(t, work, nil, "git", "-C", "app2", "rev-parse", "origin/"+testenv.GitBranch)); got != pushed {
			t.Errorf("fetched %s, want %s", got, pushed)
		}
	})

	t.Run("password", func(t *testing.T) {
		login := func(user, password string) (string, error) {
			c, err := sshDial(s, user, password)
			if err != nil {
				return "", err
			}
			defer c.Close()
			sess, err := c.NewSession()
			if err != nil {
				return "", err
			}
			defer sess.Close()
			out, err := sess.Output("echo $USER")
			return string(out), err
		}
		if out, err := login("ops", "ops-secret"); err != nil || out != "ops\n" {
			t.Errorf("password login as ops: %v %q", err, out)
		}
		if _, err := login("ops", "wrong"); err == nil {
			t.Error("a wrong password logged in")
		}
		if _, err := login("deploy", ""); err == nil {
			t.Error("deploy, who has no password, logged in with an empty one")
		}
		s.WaitLog(t, `Failed password for ops from 127\.0\.0\.1`)
	})

	// The machine's account files and login records are as they were.
	for f, before := range etcBefore {
		if after, _ := os.ReadFile(f); !bytes.Equal(before, after) {
			t.Errorf("%s changed while sshd ran", f)
		}
	}
}

// sshDial logs in to s as user with a password, with x/crypto/ssh.
func sshDial(s *testenv.SSHD, user, password string) (*ssh.Client, error) {
	return ssh.Dial("tcp", s.Addr, &ssh.ClientConfig{
		User:            user,
		Auth:            []ssh.AuthMethod{ssh.Password(password)},
		HostKeyCallback: ssh.FixedHostKey(s.HostKey),
		Timeout:         10 * time.Second,
	})
}

// TestSSHDNetns: an sshd on port 22 of a test host in a network
// namespace, reached from the test's namespace; git's scp-like URL works
// without a port.
func TestSSHDNetns(t *testing.T) {
	testenv.RequireRoot(t)
	needTools(t, "ssh", "git")
	h := testenv.NewHost(t)
	key := testenv.NewSSHKey(t)
	// The test binary's namespaces, as /proc/self shows them (its main
	// thread's): StartSSHD's namespaces must never become them.
	own := map[string]string{}
	for _, ns := range []string{"net", "mnt"} {
		l, err := os.Readlink("/proc/self/ns/" + ns)
		if err != nil {
			t.Fatal(err)
		}
		own[ns] = l
	}
	s := testenv.StartSSHD(t, testenv.SSHDOptions{Host: h.Addr.String(), Netns: h.Netns, AuthorizedKeys: []ssh.PublicKey{key.Public}})
	if s.Port != 22 || s.Addr != h.Addr.String()+":22" || !strings.HasPrefix(s.KnownHostsLine(), h.Addr.String()+" ") {
		t.Errorf("sshd at %s, known_hosts line %q", s.Addr, s.KnownHostsLine())
	}
	work := t.TempDir()
	out := mustRun(t, work, nil, append(append([]string{"ssh"}, s.ClientOptions(key.Path)...), "deploy@"+h.Addr.String(),
		"readlink /proc/self/ns/net /proc/self/ns/mnt")...)
	if session := strings.Fields(out); len(session) != 2 || session[0] == own["net"] || session[1] == own["mnt"] {
		t.Errorf("the session's network and mount namespaces are %q, the test's %v: want others", out, own)
	}
	for ns, l := range own {
		if now, _ := os.Readlink("/proc/self/ns/" + ns); now != l {
			t.Errorf("the test binary's %s namespace is %s since StartSSHD, was %s", ns, now, l)
		}
	}
	repo := s.GitRepo(t, testenv.SSHDefaultUser, "app.git")
	mustRun(t, work, []string{"GIT_SSH_COMMAND=" + s.SSHCommand(key.Path)}, "git", "clone", "-q", "deploy@"+h.Addr.String()+":app.git", "app")
	if head := strings.TrimSpace(mustRun(t, work, nil, "git", "-C", "app", "rev-parse", "HEAD")); head != repo.Head {
		t.Errorf("cloned %s, want %s", head, repo.Head)
	}
}

// TestSSHDCleanup: cleanup ends sshd, and the sessions it started, which
// sshd puts out of its process group, and removes its files.
func TestSSHDCleanup(t *testing.T) {
	testenv.RequireRoot(t)
	needTools(t, "ssh")
	var listener, session int
	var dir string
	var client *exec.Cmd
	clientDone := make(chan struct{})
	t.Run("sshd", func(t *testing.T) {
		key := testenv.NewSSHKey(t)
		s := testenv.StartSSHD(t, testenv.SSHDOptions{AuthorizedKeys: []ssh.PublicKey{key.Public}})
		listener, dir = s.PID(), s.Dir
		client = exec.Command("ssh", append(s.ClientOptions(key.Path), "deploy@"+s.Host, "echo $$; exec sleep 600")...)
		client.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		stdout, err := client.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := client.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { client.Wait(); close(clientDone) }()
		var line [32]byte
		n, _ := stdout.Read(line[:])
		session, err = strconv.Atoi(strings.TrimSpace(string(line[:n])))
		if err != nil {
			t.Fatalf("the session's pid: %q", line[:n])
		}
	})
	t.Cleanup(func() {
		if client == nil || client.Process == nil {
			return // never started
		}
		select {
		case <-clientDone:
		default:
			client.Process.Kill()
			<-clientDone
		}
	})
	if t.Failed() {
		return
	}
	// Ended: gone, or a zombie that init has yet to reap (the session's
	// parent died before it).
	for what, pid := range map[string]int{"listener": listener, "session": session} {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err == nil && !regexp.MustCompile(`(?m)^State:\s+Z`).Match(st) {
			t.Errorf("sshd's %s (pid %d) still runs after cleanup:\n%s", what, pid, st)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there after cleanup: %v", dir, err)
	}
	select {
	case <-clientDone: // the connection ended with the server
	case <-time.After(10 * time.Second):
		t.Error("the ssh client still runs 10 s after its server ended")
	}
}
