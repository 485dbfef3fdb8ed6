package testenv

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Postgres is a private PostgreSQL server the test started.
type Postgres struct {
	Host    string // the address it listens on
	Port    int
	Dir     string // data directory and socket directory live below it
	User    string // superuser, trust authentication unless a password is set
	bindir  string
	netns   string
	process *exec.Cmd
	done    chan struct{}
}

// PostgresOptions tune StartPostgres.
type PostgresOptions struct {
	// Host is the listen address: 127.0.0.1 by default, a 127.0.0.x alias,
	// or a test host's address together with Netns.
	Host string
	// Netns runs the server inside that network namespace.
	Netns string
	// Auth is the pg_hba method for TCP connections: trust (default), md5
	// or scram-sha-256. Password is then set for User.
	Auth     string
	Password string
	// TLS turns on ssl with a self-signed certificate, so clients may
	// negotiate TLS (sslmode=prefer and require).
	TLS bool
}

// PostgresBin finds the directory of the server binaries (initdb,
// postgres, pg_ctl) of the newest installed PostgreSQL.
func PostgresBin() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server found: install the postgresql package")
}

func versionOf(dir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return v
}

// StartPostgres runs initdb and starts a server on a free port, owned by
// the postgres system user (the server refuses to run as root). It is
// stopped and its files removed at cleanup.
func StartPostgres(t testing.TB, o PostgresOptions) *Postgres {
	t.Helper()
	RequireRoot(t)
	bindir, err := PostgresBin()
	Need(t, err == nil, fmt.Sprint(err))
	u, err := user.Lookup("postgres")
	Need(t, err == nil, "no postgres system user: install the postgresql package")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Auth == "" {
		o.Auth = "trust"
	}
	dir := serverDir(t, "sluice-pg-", uid, gid)
	pg := &Postgres{Host: o.Host, Dir: dir, User: "postgres", bindir: bindir, netns: o.Netns}
	t.Cleanup(func() { pg.stop(t); os.RemoveAll(dir) })

	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	data := filepath.Join(dir, "data")
	args := []string{"-D", data, "-U", "postgres", "--auth-local=trust", "--auth-host=" + o.Auth, "-E", "UTF8", "--no-sync"}
	var pwfile string
	if o.Password != "" {
		pwfile = filepath.Join(dir, "pw")
		os.WriteFile(pwfile, []byte(o.Password+"\n"), 0o600)
		os.Chown(pwfile, uid, gid)
		args = append(args, "--pwfile="+pwfile)
	}
	initdb := exec.Command(filepath.Join(bindir, "initdb"), args...)
	initdb.SysProcAttr = cred
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if pwfile != "" {
		os.Remove(pwfile)
	}
	// Accept TCP clients from any address: through the proxy and from a
	// test host's veth, the client is not always 127.0.0.1.
	hba := fmt.Sprintf("local all all trust\nhost all all 0.0.0.0/0 %s\nhost all all ::/0 %s\n", o.Auth, o.Auth)
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Chown(filepath.Join(data, "pg_hba.conf"), uid, gid)
	var tlsArgs []string
	if o.TLS {
		crt, key := filepath.Join(data, "server.crt"), filepath.Join(data, "server.key")
		if err := writeSelfSigned(crt, key, o.Host); err != nil {
			t.Fatal(err)
		}
		os.Chown(crt, uid, gid)
		os.Chown(key, uid, gid)
		tlsArgs = []string{"-c", "ssl=on", "-c", "ssl_cert_file=" + crt, "-c", "ssl_key_file=" + key}
	}

	for attempt := 0; attempt < 5; attempt++ {
		if o.Netns == "" {
			pg.Port = FreePort(t, o.Host)
		} else {
			pg.Port = 20000 + int(randUint16()%20000)
		}
		argv := []string{filepath.Join(bindir, "postgres"), "-D", data, "-p", strconv.Itoa(pg.Port),
			"-c", "listen_addresses=" + o.Host, "-c", "unix_socket_directories=" + dir,
			"-c", "fsync=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"}
		argv = append(argv, tlsArgs...)
		attr := &syscall.SysProcAttr{Setpgid: true}
		if o.Netns == "" {
			attr.Credential = cred.Credential
		} else {
			// ip netns exec needs root; setpriv then drops to postgres.
			argv = append([]string{"ip", "netns", "exec", o.Netns, "setpriv",
				"--reuid=" + u.Uid, "--regid=" + u.Gid, "--clear-groups"}, argv...)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.SysProcAttr = attr
		logPath := filepath.Join(dir, "server.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		os.Chown(logPath, uid, gid)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("start postgres: %v", err)
		}
		logf.Close()
		pg.process = cmd
		pg.done = make(chan struct{})
		go func(done chan struct{}) { cmd.Wait(); close(done) }(pg.done)
		if pg.waitReady(15 * time.Second) {
			if o.Auth == "md5" && o.Password != "" {
				// Store the password as an md5 hash so md5 authentication
				// is really md5, not SCRAM behind an md5 pg_hba line.
				pg.Admin(t, fmt.Sprintf("SET password_encryption = 'md5'; ALTER ROLE postgres PASSWORD '%s'", o.Password))
			}
			return pg
		}
		pg.stop(t)
		log, _ := os.ReadFile(logPath)
		if !strings.Contains(string(log), "could not bind") && !strings.Contains(string(log), "already in use") {
			t.Fatalf("postgres did not start:\n%s", log)
		}
	}
	t.Fatal("postgres: no free port after 5 attempts")
	return nil
}

func (pg *Postgres) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-pg.done:
			return false
		default:
		}
		// The unix socket file appears once the server listens; it
		// accepts sessions once pg_isready says so (before that, a
		// connection gets "the database system is starting up").
		if _, err := os.Stat(filepath.Join(pg.Dir, ".s.PGSQL."+strconv.Itoa(pg.Port))); err == nil {
			if exec.Command(filepath.Join(pg.bindir, "pg_isready"), "-q", "-h", pg.Dir, "-p", strconv.Itoa(pg.Port)).Run() == nil {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// stop shuts the server down: SIGQUIT (PostgreSQL's immediate shutdown) to
// the process group the test started, SIGKILL if it lingers.
func (pg *Postgres) stop(t testing.TB) {
	if pg.process == nil || pg.process.Process == nil {
		return
	}
	stopGroup(pg.process, pg.done, syscall.SIGQUIT, 10*time.Second)
	pg.process = nil
}

// serverDir makes a private server's directory under the temporary
// directory, readable by all (clients reach its socket) and owned by the
// user the server runs as. The caller removes it.
func serverDir(t testing.TB, prefix string, uid, gid int) string {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	os.Chown(dir, uid, gid)
	return dir
}

// stopGroup sends sig to the process group of cmd, which the test
// started as a group leader, and waits for done (closed when cmd was
// waited for); after grace it kills the group.
func stopGroup(cmd *exec.Cmd, done <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, sig)
	select {
	case <-done:
	case <-time.After(grace):
		syscall.Kill(-pgid, syscall.SIGKILL)
		<-done
	}
}

// Admin runs SQL as the superuser over the unix socket, which is never
// intercepted, and returns the unaligned output.
func (pg *Postgres) Admin(t testing.TB, sql string) string {
	t.Helper()
	out, err := exec.Command("psql", "-X", "-w", "-h", pg.Dir, "-p", strconv.Itoa(pg.Port), "-U", "postgres", "-d", "postgres", "-Atc", sql).CombinedOutput()
	if err != nil {
		t.Fatalf("admin %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Addr is host:port for clients.
func (pg *Postgres) Addr() string { return net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)) }

// Socket is the unix socket directory, for admin connections that must
// never be intercepted.
func (pg *Postgres) Socket() string { return pg.Dir }

// PsqlArgs returns psql arguments connecting over TCP to host:port (by
// default the server's own address) and running query unaligned.
func (pg *Postgres) PsqlArgs(host string, port int, query string) []string {
	if host == "" {
		host, port = pg.Host, pg.Port
	}
	return []string{"psql", "-X", "-w", "-h", host, "-p", strconv.Itoa(port), "-U", pg.User, "-d", "postgres", "-Atc", query}
}

func randUint16() uint16 {
	var b [2]byte
	rand.Read(b[:])
	return uint16(b[0])<<8 | uint16(b[1])
}
