package testenv

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	"golang.org/x/sys/unix"
)

// SSHDefaultUser is the login user of an SSHD started with no Users.
const SSHDefaultUser = "deploy"

// sshdPrivsepDir is the privilege separation directory compiled into
// Debian's sshd: it refuses to start without it, and chroots each
// connection's unprivileged child into it.
const sshdPrivsepDir = "/run/sshd"

// SSHD is a private OpenSSH sshd the test started: its own sshd_config,
// ed25519 host key and login users, logging at LogLevel VERBOSE into a
// buffer the test reads (Log, WaitLog). At cleanup every process of it
// (the listener, each connection's sshd and the sessions under them) is
// stopped and its files removed. It belongs to the test that started it;
// its methods may be called from the test's goroutines.
//
// The login users exist only for this sshd. sshd runs in a mount
// namespace of its own, where /etc/passwd and /etc/shadow are copies of
// the machine's with the test's users added, each as an alias of root
// (uid 0, gid 0) with its home under Dir; the machine's own files are
// never written. The same namespace hides the machine's /var/log (wtmp,
// btmp, lastlog) and /run/utmp from sshd's login records behind files
// under Dir. Because the users are uid 0, sshd_config says
// PermitRootLogin yes; `id -un` in a session prints root (the first uid-0
// entry), while USER, LOGNAME and HOME are the login user's.
type SSHD struct {
	Host  string // the address it listens on, without a port
	Port  int
	Addr  string // Host:Port
	Netns string // the network namespace it runs in; "" for the test's own

	// HostKey is sshd's only host key (ed25519, made by the test).
	HostKey ssh.PublicKey
	// KnownHosts is a known_hosts file that trusts HostKey for Addr.
	KnownHosts string
	// Dir holds sshd_config, the keys, the users' homes (home/<user>)
	// and the stand-ins for /var/log and /run/utmp.
	Dir string

	users   []string
	log     *Buffer // replaced at each start
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the listener has been waited for
	mountNS string        // readlink of /proc/<pid>/ns/mnt of sshd's processes
}

// SSHDOptions tune StartSSHD. The zero value is an sshd on 127.0.0.1 with
// a free port and one user, SSHDefaultUser, whom no key is authorised for.
type SSHDOptions struct {
	// Host is the listen address: 127.0.0.1 by default, another
	// 127.0.0.x, or a test host's address (Host.Addr) together with
	// Netns.
	Host string
	// Netns runs sshd inside that network namespace (Host.Netns).
	Netns string
	// Port defaults to 22 inside Netns (a fresh namespace has nothing on
	// it) and to a free port otherwise.
	Port int
	// Users are the login users; SSHDefaultUser when empty. A name the
	// machine already has (root included) is replaced, for this sshd
	// only, by the test's uid-0 user with its home under Dir.
	Users []string
	// AuthorizedKeys are authorised for every user, in
	// ~/.ssh/authorized_keys (AuthorizedKeysFile .ssh/authorized_keys).
	AuthorizedKeys []ssh.PublicKey
	// TrustedUserCAKeys are user CAs (TrustedUserCAKeys): a certificate
	// one of them signed logs in as any of its principals.
	TrustedUserCAKeys []ssh.PublicKey
	// Passwords are login passwords by user (each must be in Users); any
	// turns on PasswordAuthentication. sshd checks them against the
	// shadow copy with UsePAM no; the hash is made with openssl passwd -6.
	Passwords map[string]string
	// Config holds extra sshd_config lines. They come before
	// StartSSHD's own, and for most keywords sshd keeps the first value
	// it reads, so they win; a Match block would swallow the lines after
	// it, so none may be given here.
	Config []string
}

// SSHDBin finds OpenSSH's sshd (Debian's openssh-server puts it in
// /usr/sbin, which is not on every PATH). sshd insists on being started
// by its absolute path, since it re-executes itself for each connection.
func SSHDBin() (string, error) {
	if p, err := exec.LookPath("sshd"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs, nil
		}
	}
	if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
		return "", errors.New("no OpenSSH sshd found: install the openssh-server package")
	}
	return "/usr/sbin/sshd", nil
}

// StartSSHD starts OpenSSH's sshd in the foreground (sshd -D -e) with a
// configuration of its own (no /etc/ssh file is read) and returns once it
// listens. The users, keys and CAs come from o. It needs root (mount and
// network namespaces, an sshd that switches users), and skips without
// it, or fails under SLUICE_E2E=required.
//
// sshd needs /run/sshd; StartSSHD creates it (empty, root's, 0755) when
// it is missing and leaves it there: it is the path Debian's own sshd
// uses, another test's sshd may be using it at the same moment, and
// removing it under a running sshd breaks its next connection.
func StartSSHD(t testing.TB, o SSHDOptions) *SSHD {
	t.Helper()
	RequireRoot(t)
	bin, err := SSHDBin()
	Need(t, err == nil, fmt.Sprint(err))
	if o.Host == "" {
		if o.Netns != "" {
			t.Fatal("StartSSHD: Netns needs Host, the test host's address")
		}
		o.Host = "127.0.0.1"
	}
	if len(o.Users) == 0 {
		o.Users = []string{SSHDefaultUser}
	}
	for _, c := range o.Config {
		if f := strings.Fields(c); len(f) > 0 && strings.EqualFold(f[0], "match") {
			t.Fatalf("StartSSHD: Config may not hold a Match block (%q)", c)
		}
	}
	if err := os.Mkdir(sshdPrivsepDir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatalf("create %s: %v", sshdPrivsepDir, err)
	}

	dir := t.TempDir()
	s := &SSHD{Host: o.Host, Netns: o.Netns, Dir: dir, users: o.Users}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	s.HostKey = writeSSHKey(t, hostKey, "sshd@sluice-test")
	binds := s.writeUsers(t, o)

	var cfg strings.Builder
	cfg.WriteString("# sshd_config written by testenv.StartSSHD\n")
	for _, c := range o.Config {
		cfg.WriteString(c + "\n")
	}
	fmt.Fprintf(&cfg, "HostKey %s\nPidFile none\nLogLevel VERBOSE\n", hostKey)
	cfg.WriteString("AuthorizedKeysFile .ssh/authorized_keys\nStrictModes yes\n")
	if len(o.TrustedUserCAKeys) > 0 {
		cas := filepath.Join(dir, "trusted_user_ca_keys")
		writeFile(t, cas, authorizedKeys(o.TrustedUserCAKeys), 0o644)
		fmt.Fprintf(&cfg, "TrustedUserCAKeys %s\n", cas)
	}
	yesNo := map[bool]string{true: "yes", false: "no"}
	fmt.Fprintf(&cfg, "PasswordAuthentication %s\nPermitEmptyPasswords no\n", yesNo[len(o.Passwords) > 0])
	// Every test user is uid 0: without PermitRootLogin yes, sshd would
	// refuse their passwords (prohibit-password) or everything (no).
	cfg.WriteString("PermitRootLogin yes\nKbdInteractiveAuthentication no\nUsePAM no\nUseDNS no\n")
	cfg.WriteString("PrintMotd no\nPrintLastLog no\nSubsystem sftp internal-sftp\n")

	for attempt := 0; attempt < 5; attempt++ {
		s.Port = o.Port
		if s.Port == 0 && o.Netns != "" {
			s.Port = 22
		} else if s.Port == 0 {
			s.Port = FreePort(t, o.Host)
		}
		s.Addr = net.JoinHostPort(s.Host, strconv.Itoa(s.Port))
		conf := filepath.Join(dir, "sshd_config")
		writeFile(t, conf, cfg.String()+"ListenAddress "+s.Addr+"\n", 0o600)
		if err := s.start(bin, conf, binds); err != nil {
			t.Fatalf("start sshd: %v", err)
		}
		t.Cleanup(func() { s.stop(t) })
		switch s.waitListening(10 * time.Second) {
		case nil:
			s.KnownHosts = filepath.Join(dir, "known_hosts")
			writeFile(t, s.KnownHosts, s.KnownHostsLine()+"\n", 0o644)
			return s
		case errSSHDPortTaken:
			if o.Port == 0 && o.Netns == "" {
				s.stop(t)
				continue
			}
		}
		t.Fatalf("sshd did not start:\n%s", s.Log())
	}
	t.Fatal("sshd: no free port after 5 attempts")
	return nil
}

var errSSHDPortTaken = errors.New("sshd: address in use")

// waitListening waits until sshd logs that it listens; it returns
// errSSHDPortTaken when sshd exits because the port was taken, or another
// error when it exits or d passes.
func (s *SSHD) waitListening(d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if strings.Contains(s.Log(), "Server listening on ") {
			return nil
		}
		select {
		case <-s.exited:
			if strings.Contains(s.Log(), "Address already in use") {
				return errSSHDPortTaken
			}
			return errors.New("sshd exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("sshd did not listen within %v", d)
}

// sshdBind is a bind mount made in sshd's mount namespace.
type sshdBind struct{ src, dst string }

// writeUsers writes the copies of /etc/passwd and /etc/shadow with o's
// users, their homes and authorized_keys, and the stand-ins for the login
// records, and returns the bind mounts that put them in place.
func (s *SSHD) writeUsers(t testing.TB, o SSHDOptions) []sshdBind {
	t.Helper()
	valid := regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	for u := range o.Passwords {
		if !slices.Contains(o.Users, u) {
			t.Fatalf("StartSSHD: a password for %q, who is not in Users %v", u, o.Users)
		}
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range o.Users {
		if !valid.MatchString(u) {
			t.Fatalf("StartSSHD: %q is not a user name sshd and /etc/passwd take", u)
		}
		home := s.Home(u)
		if err := os.MkdirAll(filepath.Join(home, ".ssh"), 0o700); err != nil {
			t.Fatal(err)
		}
		os.Chmod(home, 0o755)
		writeFile(t, filepath.Join(home, ".ssh", "authorized_keys"), authorizedKeys(o.AuthorizedKeys), 0o600)
		// "*" matches no password and, unlike "!", does not lock the
		// account, which sshd checks itself under UsePAM no.
		hash := "*"
		if pw, ok := o.Passwords[u]; ok {
			hash = cryptPassword(t, pw)
		}
		passwd = setEntry(passwd, u, fmt.Sprintf("%s:x:0:0:%s:%s:/bin/sh", u, u, home))
		// Empty aging fields: the password never expires.
		shadow = setEntry(shadow, u, u+":"+hash+":::::::")
	}
	etc := filepath.Join(s.Dir, "etc")
	os.Mkdir(etc, 0o755)
	writeFile(t, filepath.Join(etc, "passwd"), string(passwd), 0o644)
	writeFile(t, filepath.Join(etc, "shadow"), string(shadow), 0o600)
	binds := []sshdBind{{filepath.Join(etc, "passwd"), "/etc/passwd"}, {filepath.Join(etc, "shadow"), "/etc/shadow"}}

	// sshd records logins with a terminal in wtmp and lastlog (creating
	// lastlog when it is missing), failed ones in btmp, and sessions in
	// utmp: all of them go to files of the test.
	if fi, err := os.Stat("/var/log"); err == nil && fi.IsDir() {
		varLog := filepath.Join(s.Dir, "var-log")
		os.Mkdir(varLog, 0o755)
		for _, f := range []string{"wtmp", "btmp", "lastlog"} {
			writeFile(t, filepath.Join(varLog, f), "", 0o644)
		}
		binds = append(binds, sshdBind{varLog, "/var/log"})
	}
	if fi, err := os.Stat("/run/utmp"); err == nil && fi.Mode().IsRegular() {
		utmp := filepath.Join(s.Dir, "utmp")
		writeFile(t, utmp, "", 0o644)
		binds = append(binds, sshdBind{utmp, "/run/utmp"})
	}
	return binds
}

// setEntry replaces the line of user in a passwd-style file, or appends
// line when there is none.
func setEntry(file []byte, user, line string) []byte {
	lines := strings.Split(strings.TrimRight(string(file), "\n"), "\n")
	replaced := false
	for i, l := range lines {
		if name, _, _ := strings.Cut(l, ":"); name == user {
			lines[i], replaced = line, true
		}
	}
	if !replaced {
		lines = append(lines, line)
	}
	return []byte(strings.Join(lines, "\n") + "\n")
}

// cryptPassword hashes pw as crypt(3) SHA-512 with openssl, which
// ca-certificates brings.
func cryptPassword(t testing.TB, pw string) string {
	t.Helper()
	_, err := exec.LookPath("openssl")
	Need(t, err == nil, "openssl is not installed: it hashes the test's SSH passwords (scripts/install-deps.sh)")
	cmd := exec.Command("openssl", "passwd", "-6", "-stdin")
	cmd.Stdin = strings.NewReader(pw + "\n")
	out, err := cmd.Output()
	hash := strings.TrimSpace(string(out))
	if err != nil || !strings.HasPrefix(hash, "$6$") {
		t.Fatalf("openssl passwd -6: %v %q", err, out)
	}
	return hash
}

// start starts sshd in a new mount namespace holding binds, and in
// s.Netns when set.
//
// The namespaces are made on a thread of their own (onDisposableThread),
// from which sshd is forked: a child starts in its parent thread's
// namespaces. The same goroutine then waits for sshd, so that the thread,
// which is sshd's parent for the parent-death signal, lives exactly as
// long as sshd; then Go ends the thread, and the namespaces go with the
// last of their processes. If the test binary dies without its cleanup, the
// kernel kills the listener (connections then end with their clients).
func (s *SSHD) start(bin, conf string, binds []sshdBind) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, "-D", "-e", "-f", conf)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Dir = s.Dir
	s.log = &Buffer{}
	// The log is read until every process holding the pipe (each
	// connection's sshd logs to it too) has closed it.
	go s.log.Drain(r)

	started := make(chan error, 1)
	exited := make(chan struct{})
	onDisposableThread(func() {
		defer close(exited)
		mountNS, err := enterSSHDNamespaces(binds, s.Netns)
		if err == nil {
			err = cmd.Start()
		}
		if err != nil {
			started <- err
			return
		}
		s.mountNS = mountNS
		started <- nil
		cmd.Wait()
	})
	err = <-started
	w.Close()
	if err != nil {
		r.Close()
		return err
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// onDisposableThread runs f in a new goroutine locked to an OS thread
// that ends when f returns, so that f may change the thread's namespaces.
// That thread is never the main thread, which Go cannot end: it would be
// parked, still in f's namespaces, and /proc/self (the main thread's)
// would show them to the whole test binary.
func onDisposableThread(f func()) {
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		// This is the main thread. While this goroutine holds it, a new
		// one cannot get it; once that one has its own, give this back.
		locked := make(chan struct{})
		go func() {
			runtime.LockOSThread() // never unlocked
			close(locked)
			f()
		}()
		<-locked
		runtime.UnlockOSThread()
	}()
}

// enterSSHDNamespaces moves the calling (locked) thread into a new mount
// namespace, private so that nothing mounted in it reaches the machine's,
// with binds mounted, and into the network namespace netnsName when it is
// not "". It returns the mount namespace's name as /proc shows it.
func enterSSHDNamespaces(binds []sshdBind, netnsName string) (string, error) {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return "", fmt.Errorf("unshare the mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return "", fmt.Errorf("make mounts private: %w", err)
	}
	for _, b := range binds {
		if err := unix.Mount(b.src, b.dst, "", unix.MS_BIND, ""); err != nil {
			return "", fmt.Errorf("bind %s over %s: %w", b.src, b.dst, err)
		}
	}
	if netnsName != "" {
		ns, err := netns.GetFromName(netnsName)
		if err != nil {
			return "", fmt.Errorf("open netns %s: %w", netnsName, err)
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			return "", fmt.Errorf("enter netns %s: %w", netnsName, err)
		}
	}
	return os.Readlink("/proc/thread-self/ns/mnt")
}

// stop ends every process in sshd's mount namespace, which only sshd and
// what it started are in: SIGTERM first (each connection's sshd then
// cleans up its session), SIGKILL to what remains after 5 s. A kill of
// the process group would not do: sshd puts each connection in a session
// of its own.
func (s *SSHD) stop(t testing.TB) {
	if s.cmd == nil {
		return
	}
	defer func() { s.cmd = nil }()
	if t.Failed() {
		t.Logf("sshd log (%s):\n%s", s.Addr, s.Log())
	}
	termed := map[int]bool{}
	soft := time.Now().Add(5 * time.Second)
	hard := soft.Add(5 * time.Second)
	for {
		pids := processesIn(s.mountNS)
		if len(pids) == 0 {
			break
		}
		now := time.Now()
		if now.After(hard) {
			t.Errorf("sshd's processes %v survived SIGKILL", pids)
			return
		}
		for _, pid := range pids {
			if now.After(soft) {
				syscall.Kill(pid, syscall.SIGKILL)
			} else if !termed[pid] {
				syscall.Kill(pid, syscall.SIGTERM)
				termed[pid] = true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		t.Errorf("sshd (pid %d) was not reaped", s.cmd.Process.Pid)
	}
}

// processesIn lists the processes (other than this one) whose mount
// namespace is ns. Zombies have none and are not listed.
func processesIn(ns string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && l == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// PID is the listener's process id.
func (s *SSHD) PID() int { return s.cmd.Process.Pid }

// Home is the home directory of user (one of the options' Users), under
// Dir. Files a test writes there are the user's on the host.
func (s *SSHD) Home(user string) string { return filepath.Join(s.Dir, "home", user) }

// KnownHostsLine is the known_hosts line that trusts HostKey for Addr,
// as ssh writes it ("[127.0.0.1]:2222 ssh-ed25519 AAAA...", or just the
// host on port 22).
func (s *SSHD) KnownHostsLine() string { return s.KnownHostsLineFor(s.Addr) }

// KnownHostsLineFor is KnownHostsLine for another host:port that reaches
// this sshd.
func (s *SSHD) KnownHostsLineFor(hostport string) string {
	return knownhosts.Line([]string{knownhosts.Normalize(hostport)}, s.HostKey)
}

// ClientOptions are options for OpenSSH's ssh, scp and sftp that log in
// to this sshd directly with the private key file identity and nothing
// else: no user or system configuration, no agent, no prompts, the port
// as an option (so destinations are user@Host) and strict host key
// checking against KnownHosts alone.
func (s *SSHD) ClientOptions(identity string) []string {
	return []string{"-F", "/dev/null", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-i", identity, "-o", "Port=" + strconv.Itoa(s.Port),
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + s.KnownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR"}
}

// SSHCommand is ssh with ClientOptions as one shell-quoted command line,
// for GIT_SSH_COMMAND and rsync -e.
func (s *SSHD) SSHCommand(identity string) string {
	words := []string{"ssh"}
	for _, o := range s.ClientOptions(identity) {
		words = append(words, shellQuote(o))
	}
	return strings.Join(words, " ")
}

// shellQuote quotes w for sh (and rsync's -e parser) when it needs it.
func shellQuote(w string) string {
	if regexp.MustCompile(`^[A-Za-z0-9_./=:@%+-]+$`).MatchString(w) {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// Log is what sshd has logged so far, one line per message. (sshd ends
// the lines it writes to stderr with "\r\n"; Log gives "\n".)
func (s *SSHD) Log() string { return strings.ReplaceAll(s.log.String(), "\r\n", "\n") }

// WaitLog waits up to 10 s for a line of sshd's log that matches the
// regular expression pattern, fails t if none does, and returns the
// line. A certificate login is logged as
//
//	Accepted publickey for deploy from 127.0.0.1 port 40000 ssh2: ED25519-CERT SHA256:... ID <key id> (serial 7) CA ED25519 SHA256:...
func (s *SSHD) WaitLog(t testing.TB, pattern string) string {
	t.Helper()
	re, err := regexp.Compile(pattern)
	if err != nil {
		t.Fatalf("WaitLog: %v", err)
	}
	var line string
	WaitFor(t, 10*time.Second, fmt.Sprintf("sshd on %s to log a line matching %q", s.Addr, pattern), func() bool {
		for _, l := range strings.Split(s.Log(), "\n") {
			if re.MatchString(l) {
				line = l
				return true
			}
		}
		return false
	})
	return line
}

// GitBranch is the branch GitRepo commits to and points HEAD at.
const GitBranch = "main"

// GitRepo is a bare repository in a user's home on an SSHD.
type GitRepo struct {
	Path string // on disk
	// URL is the repository over ssh, as git clone takes it:
	// ssh://user@host:port/~/name. A job's scp-like form, user@host:name,
	// works as well with the port in GIT_SSH_COMMAND (ClientOptions has it).
	URL  string
	Head string // the commit GitBranch points at: one commit, whose tree holds README
}

// GitRepo creates a bare repository name (such as "app.git") in user's
// home with one commit on GitBranch (author, committer and dates from
// GitEnv, so its id is the same in every run).
func (s *SSHD) GitRepo(t testing.TB, user, name string) *GitRepo {
	t.Helper()
	if !slices.Contains(s.users, user) || !filepath.IsLocal(name) {
		t.Fatalf("GitRepo(%q, %q): want a user of the sshd (%v) and a path inside the home", user, name, s.users)
	}
	repo := &GitRepo{Path: filepath.Join(s.Home(user), name),
		URL: "ssh://" + user + "@" + s.Addr + "/~/" + name}
	git := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Env = append(os.Environ(), GitEnv()...)
		cmd.Stdin = strings.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, stderr.String())
		}
		return strings.TrimSpace(string(out))
	}
	git("", "init", "-q", "--bare", "-b", GitBranch, repo.Path)
	// Plumbing: a bare repository has no work tree to commit from.
	blob := git("sluice test repository\n", "-C", repo.Path, "hash-object", "-w", "--stdin")
	tree := git("100644 blob "+blob+"\tREADME\n", "-C", repo.Path, "mktree")
	repo.Head = git("", "-C", repo.Path, "commit-tree", tree, "-m", "initial commit")
	git("", "-C", repo.Path, "update-ref", "refs/heads/"+GitBranch, repo.Head)
	return repo
}

// GitEnv is environment for git that makes its commits reproducible and
// keeps the machine's and the user's git configuration out: a fixed
// author and committer, with fixed dates.
func GitEnv() []string {
	return []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=Sluice Test", "GIT_AUTHOR_EMAIL=test@sluice.invalid", "GIT_AUTHOR_DATE=2026-01-01T00:00:00Z",
		"GIT_COMMITTER_NAME=Sluice Test", "GIT_COMMITTER_EMAIL=test@sluice.invalid", "GIT_COMMITTER_DATE=2026-01-01T00:00:00Z"}
}

// SSHKey is an ed25519 key pair a test made, in OpenSSH's file formats.
type SSHKey struct {
	Path   string        // the private key, no passphrase, mode 0600: for ssh -i and ssh-keygen -s
	Public ssh.PublicKey // also in Path+".pub"
	Signer ssh.Signer    // for x/crypto/ssh clients
}

// NewSSHKey makes an ed25519 key pair in a directory of the test's.
func NewSSHKey(t testing.TB) *SSHKey {
	t.Helper()
	path := filepath.Join(t.TempDir(), "id_ed25519")
	pub := writeSSHKey(t, path, "sluice-test")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return &SSHKey{Path: path, Public: pub, Signer: signer}
}

// SSHCertOptions describe a user certificate.
type SSHCertOptions struct {
	KeyID      string   // sshd logs it with each login ("ID <KeyID> (serial N)")
	Principals []string // the users it may log in as; at least one
	Serial     uint64
	Validity   string // ssh-keygen -V: "-5m:+1h" when ""
}

// SignUserKey certifies k as a user key with ca, by ssh-keygen -s, and
// returns the certificate's path, k.Path+"-cert.pub", where ssh -i k.Path
// finds it by itself.
func (ca *SSHKey) SignUserKey(t testing.TB, k *SSHKey, o SSHCertOptions) string {
	t.Helper()
	if len(o.Principals) == 0 {
		t.Fatal("SignUserKey: a certificate without principals logs in as nobody")
	}
	if o.Validity == "" {
		o.Validity = "-5m:+1h"
	}
	out, err := exec.Command("ssh-keygen", "-q", "-s", ca.Path, "-I", o.KeyID, "-n", strings.Join(o.Principals, ","),
		"-z", strconv.FormatUint(o.Serial, 10), "-V", o.Validity, k.Path+".pub").CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -s: %v\n%s", err, out)
	}
	return k.Path + "-cert.pub"
}

// writeSSHKey writes a new ed25519 private key to path (0600) and its
// public key to path+".pub", and returns the public key.
func writeSSHKey(t testing.TB, path, comment string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, string(pem.EncodeToMemory(block)), 0o600)
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path+".pub", strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))+" "+comment+"\n", 0o644)
	return key
}

// authorizedKeys is keys in authorized_keys format, one a line.
func authorizedKeys(keys []ssh.PublicKey) string {
	var b strings.Builder
	for _, k := range keys {
		b.Write(ssh.MarshalAuthorizedKey(k))
	}
	return b.String()
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
}
