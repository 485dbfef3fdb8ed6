package testenv

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The accounts every server StartMariaDB starts has, besides root (which
// logs in over the unix socket only, by unix_socket authentication). Each
// is granted ALL on the app database and may connect from any host.
const (
	// MariaDBAppUser logs in with mysql_native_password.
	MariaDBAppUser     = "app"
	MariaDBAppPassword = "app-secret"
	// MariaDBEdUser logs in with the ed25519 plugin (client_ed25519).
	MariaDBEdUser     = "ed"
	MariaDBEdPassword = "ed-secret"
	// MariaDBTLSUser logs in with mysql_native_password and REQUIRE SSL:
	// the server refuses it on a connection without TLS.
	MariaDBTLSUser     = "tlsonly"
	MariaDBTLSPassword = "tls-secret"
	// MariaDBDatabase holds the people table.
	MariaDBDatabase = "app"
)

// MariaDBPerson is a row of app.people.
type MariaDBPerson struct {
	ID               int
	Name, Email, SSN string
}

// MariaDBPeople are the rows of app.people in every server StartMariaDB
// starts, in id order: personal data for masking tests to find.
//
//	CREATE TABLE app.people (id int primary key, name varchar(64),
//	                         email varchar(128), ssn varchar(16))
var MariaDBPeople = []MariaDBPerson{
	{1, "Alice Martin", "alice@example.com", "123-45-6789"},
	{2, "Bob Okafor", "bob.okafor@example.org", "987-65-4321"},
	{3, "Chloe Dubois", "chloe.dubois@example.net", "555-01-2345"},
}

// MariaDB is a private MariaDB server the test started: its own data
// directory, unix socket and TCP port, stopped and removed at cleanup.
// It belongs to the test that started it; its methods may be called from
// the test's goroutines.
type MariaDB struct {
	Addr    string // the address it listens on (a host, no port): 127.0.0.1 unless MariaDBOptions.Host says otherwise
	Port    int
	Socket  string // the unix socket, for admin connections that must never be intercepted
	Version string // SELECT VERSION(), such as "10.11.19-MariaDB-0+deb12u1"
	// CA is the PEM file that clients verifying the server's TLS
	// certificate trust (the certificate is self-signed, for Addr); ""
	// when the server has no TLS.
	CA      string
	Dir     string // holds the data directory, socket, pid file and logs
	process *exec.Cmd
	done    chan struct{}
}

// MariaDBOptions tune StartMariaDB. The zero value is a server on
// 127.0.0.1 with TLS.
type MariaDBOptions struct {
	// Host is the listen address: 127.0.0.1 by default, a 127.0.0.x alias,
	// or a test host's address together with Netns.
	Host string
	// Netns runs the server inside that network namespace.
	Netns string
	// NoTLS starts the server without a certificate: it then offers no
	// TLS, and MariaDBTLSUser cannot log in.
	NoTLS bool
	// Args are extra mariadbd options ("--max-connections=500"), placed
	// after StartMariaDB's own, so they win over them.
	Args []string
}

// MariaDBBin finds mariadbd and mariadb-install-db.
func MariaDBBin() (server, installDB string, err error) {
	server, err = exec.LookPath("mariadbd")
	if err != nil {
		// /usr/sbin is not on every PATH.
		server = "/usr/sbin/mariadbd"
		if _, err := os.Stat(server); err != nil {
			return "", "", fmt.Errorf("no MariaDB server found: install the mariadb-server package")
		}
	}
	installDB, err = exec.LookPath("mariadb-install-db")
	if err != nil {
		return "", "", fmt.Errorf("no mariadb-install-db found: install the mariadb-server package")
	}
	for _, client := range []string{"mariadb", "mariadb-admin"} {
		if _, err := exec.LookPath(client); err != nil {
			return "", "", fmt.Errorf("no %s client found: install the mariadb-client package", client)
		}
	}
	return server, installDB, nil
}

// StartMariaDB creates a data directory with mariadb-install-db and starts
// mariadbd on a free port, as the mysql system user when there is one (as
// root otherwise), with TLS unless o.NoTLS. It is ready when a client can
// log in. It holds the database app with the table people
// (MariaDBPeople) and the accounts MariaDBAppUser, MariaDBEdUser and
// MariaDBTLSUser. At cleanup the server is stopped and its files removed.
func StartMariaDB(t testing.TB, o MariaDBOptions) *MariaDB {
	t.Helper()
	RequireRoot(t)
	server, installDB, err := MariaDBBin()
	Need(t, err == nil, fmt.Sprint(err))
	// The server runs as the mysql user when there is one. mariadbd
	// refuses root unless told --user=root.
	runAs, uid, gid := "root", 0, 0
	if u, err := user.Lookup("mysql"); err == nil {
		runAs = "mysql"
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}

	dir := serverDir(t, "sluice-mariadb-", uid, gid)
	my := &MariaDB{Addr: o.Host, Dir: dir, Socket: filepath.Join(dir, "mariadbd.sock")}
	t.Cleanup(func() { my.stop(); os.RemoveAll(dir) })
	data, tmp := filepath.Join(dir, "data"), filepath.Join(dir, "tmp")
	os.Mkdir(tmp, 0o700)
	os.Chown(tmp, uid, gid)

	// Options both the bootstrap and the server get: small and unsynced,
	// no host name lookups (an account's host is its address), utf8mb4
	// as MySQL 8 and Debian's configuration have it.
	base := []string{"--datadir=" + data, "--tmpdir=" + tmp,
		"--skip-name-resolve", "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
		"--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
		"--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0"}
	// --no-defaults must come first: no /etc/mysql file reaches the server.
	// It runs as root and hands the files to runAs.
	install := exec.Command(installDB, append([]string{"--no-defaults", "--user=" + runAs,
		"--auth-root-authentication-method=socket", "--skip-test-db"},
		base...)...)
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}

	var tlsArgs []string
	if !o.NoTLS {
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		if err := writeSelfSigned(crt, key, o.Host); err != nil {
			t.Fatal(err)
		}
		os.Chown(key, uid, gid)
		tlsArgs = []string{"--ssl-cert=" + crt, "--ssl-key=" + key}
		my.CA = crt
	}

	logPath := filepath.Join(dir, "error.log")
	for attempt := 0; attempt < 5; attempt++ {
		if o.Netns == "" {
			my.Port = FreePort(t, o.Host)
		} else {
			my.Port = 20000 + int(randUint16()%20000)
		}
		argv := append([]string{server, "--no-defaults"}, base...)
		argv = append(argv, "--socket="+my.Socket, "--pid-file="+filepath.Join(dir, "mariadbd.pid"),
			"--port="+strconv.Itoa(my.Port), "--bind-address="+o.Host, "--log-error="+logPath,
			"--max-connections=200")
		if runAs == "root" {
			argv = append(argv, "--user=root")
		}
		argv = append(argv, tlsArgs...)
		argv = append(argv, o.Args...)
		// The server starts as runAs (not as root switching with --user,
		// which would clear the parent-death signal): if the test binary
		// dies without its cleanup (a -timeout panic, SIGKILL), the kernel
		// kills the server with it.
		attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if o.Netns == "" {
			attr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		} else {
			// ip netns exec needs root; setpriv then drops to runAs and
			// sets the parent-death signal again (a uid change clears it).
			argv = append([]string{"ip", "netns", "exec", o.Netns, "setpriv",
				"--reuid=" + strconv.Itoa(uid), "--regid=" + strconv.Itoa(gid), "--clear-groups",
				"--pdeathsig=KILL"}, argv...)
		}
		os.Remove(logPath)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.SysProcAttr = attr
		// Whatever the server prints before it opens its log.
		out, err := os.Create(filepath.Join(dir, "server.out"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start mariadbd: %v", err)
		}
		out.Close()
		my.process = cmd
		my.done = make(chan struct{})
		go func(done chan struct{}) { cmd.Wait(); close(done) }(my.done)
		if my.waitReady(30 * time.Second) {
			my.Version = my.Admin(t, "SELECT VERSION()")
			my.Admin(t, mariadbSetup())
			return my
		}
		my.stop()
		log, _ := os.ReadFile(logPath)
		early, _ := os.ReadFile(filepath.Join(dir, "server.out"))
		if !strings.Contains(string(log), "Address already in use") {
			t.Fatalf("mariadbd did not start:\n%s%s", early, log)
		}
	}
	t.Fatal("mariadbd: no free port after 5 attempts")
	return nil
}

// mariadbSetup is the SQL that creates the app database, its table and
// the accounts. Every value in it is a constant of this file.
func mariadbSetup() string {
	var b strings.Builder
	b.WriteString("INSTALL SONAME 'auth_ed25519';\n")
	fmt.Fprintf(&b, "CREATE DATABASE %s;\n", MariaDBDatabase)
	fmt.Fprintf(&b, "CREATE TABLE %s.people (id int PRIMARY KEY, name varchar(64), email varchar(128), ssn varchar(16));\n", MariaDBDatabase)
	for _, p := range MariaDBPeople {
		fmt.Fprintf(&b, "INSERT INTO %s.people VALUES (%d, '%s', '%s', '%s');\n", MariaDBDatabase, p.ID, p.Name, p.Email, p.SSN)
	}
	for _, a := range []struct{ user, plugin, password, extra string }{
		{MariaDBAppUser, "mysql_native_password", MariaDBAppPassword, ""},
		{MariaDBEdUser, "ed25519", MariaDBEdPassword, ""},
		{MariaDBTLSUser, "mysql_native_password", MariaDBTLSPassword, " REQUIRE SSL"},
	} {
		fmt.Fprintf(&b, "CREATE USER '%s'@'%%' IDENTIFIED VIA %s USING PASSWORD('%s')%s;\n", a.user, a.plugin, a.password, a.extra)
		fmt.Fprintf(&b, "GRANT ALL ON %s.* TO '%s'@'%%';\n", MariaDBDatabase, a.user)
	}
	return b.String()
}

// waitReady waits until root can log in over the socket (mariadbd accepts
// sessions on its socket and its TCP port from the same moment), the
// server exits, or d passes.
func (my *MariaDB) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		select {
		case <-my.done:
			return false
		default:
		}
		if _, err := os.Stat(my.Socket); err == nil {
			if _, err := my.admin("SELECT 1"); err == nil {
				return true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// stop shuts the server down: SIGTERM to the process group the test
// started (mariadbd's normal shutdown), SIGKILL if it lingers.
func (my *MariaDB) stop() {
	if my.process == nil || my.process.Process == nil {
		return
	}
	stopGroup(my.process, my.done, syscall.SIGTERM, 15*time.Second)
	my.process = nil
}

// Admin runs sql (one statement or several, separated by semicolons) as
// root over the unix socket, which is never intercepted, with the mariadb
// client in batch mode, and returns what it printed: one line a row, no
// header, columns separated by tabs (tabs, newlines and backslashes in
// values escaped as \t, \n and \\). It fails t on any error.
func (my *MariaDB) Admin(t testing.TB, sql string) string {
	t.Helper()
	out, err := my.admin(sql)
	if err != nil {
		t.Fatalf("admin %q: %v", sql, err)
	}
	return out
}

func (my *MariaDB) admin(sql string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("mariadb", "--no-defaults", "--protocol=socket", "--socket="+my.Socket,
		"--user=root", "--default-character-set=utf8mb4", "--batch", "--skip-column-names", "--connect-timeout=5",
		"--execute="+sql)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimRight(stdout.String(), "\n"), nil
}

// HostPort is Addr:Port for clients.
func (my *MariaDB) HostPort() string { return net.JoinHostPort(my.Addr, strconv.Itoa(my.Port)) }

// ClientArgs returns mariadb client arguments that log in as user over
// TCP to the server's address, use the app database and run query in
// batch mode (tab-separated, no header). The 10.11 client uses TLS,
// unverified, whenever the server offers it: append "--skip-ssl" for a
// plain connection, or "--ssl-ca="+CA and "--ssl-verify-server-cert" for
// verified TLS.
func (my *MariaDB) ClientArgs(user, password, query string) []string {
	return []string{"mariadb", "--no-defaults", "--protocol=tcp", "--host=" + my.Addr, "--port=" + strconv.Itoa(my.Port),
		"--user=" + user, "--password=" + password, "--database=" + MariaDBDatabase, "--default-character-set=utf8mb4",
		"--batch", "--skip-column-names", "--connect-timeout=5", "--execute=" + query}
}
