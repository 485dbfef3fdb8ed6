package testenv_test

// These tests start real MariaDB servers: they need root (the server runs
// as the mysql user, its files made by root) and the mariadb-server and
// mariadb-client packages (scripts/install-deps.sh). They skip under
// -short, and without root unless SLUICE_E2E=required.

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/sluicehq/sluice/internal/testenv"
)

// mariadbConn opens a go-sql-driver connection pool to the app database
// as user, with TLS when tc is set; it is closed at cleanup.
func mariadbConn(t *testing.T, my *testenv.MariaDB, user, password string, tc *tls.Config) *sql.DB {
	t.Helper()
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd = user, password
	cfg.Net, cfg.Addr = "tcp", my.HostPort()
	cfg.DBName = testenv.MariaDBDatabase
	cfg.TLS = tc
	cfg.Timeout = 10 * time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { db.Close() })
	return db
}

// checkPeople reads app.people and compares it with MariaDBPeople.
func checkPeople(t *testing.T, db *sql.DB) {
	t.Helper()
	rows, err := db.Query("SELECT id, name, email, ssn FROM people ORDER BY id")
	if err != nil {
		t.Fatalf("select people: %v", err)
	}
	defer rows.Close()
	var got []testenv.MariaDBPerson
	for rows.Next() {
		var p testenv.MariaDBPerson
		if err := rows.Scan(&p.ID, &p.Name, &p.Email, &p.SSN); err != nil {
			t.Fatal(err)
		}
		got = append(got, p)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(testenv.MariaDBPeople) {
		t.Errorf("people:\n got %v\nwant %v", got, testenv.MariaDBPeople)
	}
}

// peopleLines is MariaDBPeople as the mariadb client prints it in batch mode.
func peopleLines() string {
	var lines []string
	for _, p := range testenv.MariaDBPeople {
		lines = append(lines, fmt.Sprintf("%d\t%s\t%s\t%s", p.ID, p.Name, p.Email, p.SSN))
	}
	return strings.Join(lines, "\n")
}

func TestMariaDB(t *testing.T) {
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{})
	if !strings.Contains(my.Version, "MariaDB") {
		t.Errorf("Version = %q, want a MariaDB version", my.Version)
	}
	t.Logf("MariaDB %s on %s, socket %s", my.Version, my.HostPort(), my.Socket)

	if got, want := my.Admin(t, "SELECT id, name, email, ssn FROM app.people ORDER BY id"), peopleLines(); got != want {
		t.Errorf("Admin output:\n%s\nwant:\n%s", got, want)
	}
	// The accounts use the plugins their names promise, so a client that
	// logs in as ed really spoke client_ed25519.
	accounts := "app\tmysql_native_password\t\ned\ted25519\t\ntlsonly\tmysql_native_password\tANY"
	if got := my.Admin(t, "SELECT user, plugin, ssl_type FROM mysql.user WHERE host = '%' ORDER BY user"); got != accounts {
		t.Errorf("accounts:\n%q\nwant:\n%q", got, accounts)
	}

	pem, err := os.ReadFile(my.CA)
	if err != nil {
		t.Fatalf("read CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("no certificate in %s", my.CA)
	}
	verified := &tls.Config{RootCAs: roots, ServerName: my.Addr}

	for _, c := range []struct {
		name, user, password string
		tls                  *tls.Config
	}{
		{"native password", testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil},
		{"native password over verified TLS", testenv.MariaDBAppUser, testenv.MariaDBAppPassword, verified},
		{"ed25519", testenv.MariaDBEdUser, testenv.MariaDBEdPassword, nil},
		{"ed25519 over verified TLS", testenv.MariaDBEdUser, testenv.MariaDBEdPassword, verified},
		{"REQUIRE SSL over verified TLS", testenv.MariaDBTLSUser, testenv.MariaDBTLSPassword, verified},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := mariadbConn(t, my, c.user, c.password, c.tls)
			// go-sql-driver/mysql drops a last 0x00 byte from an auth
			// switch's data, so one client_ed25519 nonce in 256 fails its
			// login with ErrMalformPkt: that error alone is tried again.
			for try := 1; c.user == testenv.MariaDBEdUser && try <= 4; try++ {
				if err := db.Ping(); !errors.Is(err, mysql.ErrMalformPkt) {
					break
				}
			}
			checkPeople(t, db)
			var name, cipher string
			if err := db.QueryRow("SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil {
				t.Fatal(err)
			}
			if (c.tls != nil) != (cipher != "") {
				t.Errorf("Ssl_cipher = %q with TLS %v", cipher, c.tls != nil)
			}
		})
	}

	t.Run("REQUIRE SSL refused without TLS", func(t *testing.T) {
		err := mariadbConn(t, my, testenv.MariaDBTLSUser, testenv.MariaDBTLSPassword, nil).Ping()
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1045 { // ER_ACCESS_DENIED_ERROR
			t.Errorf("login without TLS: %v, want access denied (1045)", err)
		}
	})

	t.Run("wrong password refused", func(t *testing.T) {
		err := mariadbConn(t, my, testenv.MariaDBAppUser, "not-the-password", nil).Ping()
		var me *mysql.MySQLError
		if !errors.As(err, &me) || me.Number != 1045 {
			t.Errorf("login with a wrong password: %v, want access denied (1045)", err)
		}
	})

	t.Run("mariadb client", func(t *testing.T) {
		for _, c := range []struct {
			name, user, password string
			extra                []string
			cipher               bool
		}{
			{"native password", testenv.MariaDBAppUser, testenv.MariaDBAppPassword, []string{"--skip-ssl"}, false},
			{"native password, TLS as the client prefers", testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil, true},
			{"ed25519", testenv.MariaDBEdUser, testenv.MariaDBEdPassword, []string{"--skip-ssl"}, false},
			{"REQUIRE SSL over verified TLS", testenv.MariaDBTLSUser, testenv.MariaDBTLSPassword,
				[]string{"--ssl-ca=" + my.CA, "--ssl-verify-server-cert"}, true},
		} {
			argv := my.ClientArgs(c.user, c.password,
				"SELECT id, name, email, ssn FROM people ORDER BY id; SHOW SESSION STATUS LIKE 'Ssl_cipher'")
			argv = append(argv, c.extra...)
			out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
			if err != nil {
				t.Errorf("%s: mariadb: %v\n%s", c.name, err, out)
				continue
			}
			people, status, _ := strings.Cut(strings.TrimRight(string(out), "\n"), "\nSsl_cipher\t")
			if people != peopleLines() {
				t.Errorf("%s: mariadb printed:\n%s\nwant:\n%s", c.name, people, peopleLines())
			}
			if c.cipher != (status != "") {
				t.Errorf("%s: Ssl_cipher = %q, want TLS %v", c.name, status, c.cipher)
			}
		}
	})
}

// TestMariaDBOptions starts a server on another loopback address, without
// TLS and with an extra server option, and one on a test host in a
// network namespace.
func TestMariaDBOptions(t *testing.T) {
	t.Run("loopback alias, no TLS, extra args", func(t *testing.T) {
		my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Host: "127.0.0.2", NoTLS: true, Args: []string{"--max-connections=17"}})
		if my.Addr != "127.0.0.2" || my.CA != "" {
			t.Errorf("Addr %q CA %q, want 127.0.0.2 and no CA", my.Addr, my.CA)
		}
		if got := my.Admin(t, "SELECT @@bind_address, @@max_connections, @@have_ssl, USER()"); got != "127.0.0.2\t17\tDISABLED\troot@localhost" {
			t.Errorf("server settings %q", got)
		}
		checkPeople(t, mariadbConn(t, my, testenv.MariaDBAppUser, testenv.MariaDBAppPassword, nil))
	})
	t.Run("test host", func(t *testing.T) {
		h := testenv.NewHost(t)
		my := testenv.StartMariaDB(t, testenv.MariaDBOptions{Host: h.Addr.String(), Netns: h.Netns})
		pem, err := os.ReadFile(my.CA)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		checkPeople(t, mariadbConn(t, my, testenv.MariaDBEdUser, testenv.MariaDBEdPassword,
			&tls.Config{RootCAs: roots, ServerName: my.Addr}))
	})
}
