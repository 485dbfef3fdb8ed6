package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestPostgresTLSMatrix: libpq (psql) and pgx, in sslmode disable, prefer,
// require and verify-full, with and without channel_binding, through the
// daemon to scram-sha-256 and md5 servers that offer TLS, one that does
// not, and a TLS-capable server whose target says upstream_tls =
// "disable". For every attempt it checks what the client gets (a session,
// or the error and the hint naming what works), and for every flow the
// attempt makes (libpq and pgx retry without TLS after an error with
// sslmode=prefer) whether the client hop and the server hop were TLS. The
// server hop is TLS wherever the server offers it and the target does not
// say disable, which the server itself confirms in pg_stat_ssl.
//
// Needs root (cgroup, eBPF), PostgreSQL's server binaries and psql.
func TestPostgresTLSMatrix(t *testing.T) {
	cg := testenv.NewCgroup(t)
	const password = "tls-S3cret-c41d"
	start := func(host, auth string, tls bool) *testenv.Postgres {
		return testenv.StartPostgres(t, testenv.PostgresOptions{Host: host, Auth: auth, Password: password, TLS: tls})
	}
	scram := start("127.0.0.2", "scram-sha-256", true)
	md5 := start("127.0.0.3", "md5", true)
	noTLS := start("127.0.0.4", "scram-sha-256", false)
	plain := start("127.0.0.5", "scram-sha-256", true)
	rules := fmt.Sprintf(`target "scram" {
  protocol = "postgres"
  address  = [%q]
}
target "md5" {
  protocol = "postgres"
  address  = [%q]
}
target "notls" {
  protocol = "postgres"
  address  = [%q]
}
target "plain" {
  protocol     = "postgres"
  address      = [%q]
  upstream_tls = "disable"
}
policy "ci" {
  targets = ["*"]
}
`, scram.Addr(), md5.Addr(), noTLS.Addr(), plain.Addr())
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: rules})
	if got := md5.Admin(t, "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'postgres'"); got != "md5" {
		t.Fatalf("the md5 server stores %q, want an MD5 hash", got)
	}
	caPath := filepath.Join(d.Dir(), "ca.crt")
	if out, err := d.Sluice(t, "ca", "--data-dir", d.DataDir); err != nil {
		t.Fatalf("sluice ca: %v\n%s", err, out)
	} else if err := os.WriteFile(caPath, []byte(out[strings.Index(out, "-----BEGIN"):]), 0o644); err != nil {
		t.Fatal(err)
	}

	const (
		refused   = "SCRAM channel binding cannot pass through the proxy"
		noSSL     = "server does not support SSL" // libpq's words
		pgxNoSSL  = "server refused TLS connection"
		cbLibpq   = "channel binding is required, but server did not offer an authentication method that supports channel binding"
		cbPgx     = "channel binding required but server does not support SCRAM-SHA-256-PLUS"
		ssl, open = "t", "f" // the server hop's pg_stat_ssl.ssl
	)
	type flow struct{ client, server bool } // TLS on each hop
	var (
		tlsFlow    = flow{true, true}
		plainFlow  = flow{false, true}
		bothPlain  = flow{false, false}
		retried    = []flow{tlsFlow, plainFlow} // refused on TLS, then in without
		verifyFull = "sslmode=verify-full sslrootcert=" + caPath
	)
	type attempt struct {
		name  string
		pid   int
		flows []flow
	}
	var attempts []attempt
	total := 0
	for _, tc := range []struct {
		client  string // psql or pgx (pgxclient, scenario ssl)
		pg      *testenv.Postgres
		options string
		want    string // ssl or open: a session with that server hop; else the client's error
		hint    bool   // the error carries the hint naming what works
		flows   []flow
	}{
		{"psql", scram, "sslmode=disable", ssl, false, []flow{plainFlow}},
		{"psql", scram, "sslmode=prefer", ssl, false, retried},
		{"psql", scram, "sslmode=prefer channel_binding=disable", ssl, false, []flow{tlsFlow}},
		{"psql", scram, "sslmode=require", refused, true, []flow{tlsFlow}},
		{"psql", scram, "sslmode=require channel_binding=disable", ssl, false, []flow{tlsFlow}},
		{"psql", scram, verifyFull + " channel_binding=disable", ssl, false, []flow{tlsFlow}},
		{"psql", scram, "sslmode=require channel_binding=require", cbLibpq, false, []flow{tlsFlow}},
		{"psql", md5, "sslmode=disable", ssl, false, []flow{plainFlow}},
		{"psql", md5, "sslmode=prefer", ssl, false, []flow{tlsFlow}},
		{"psql", md5, "sslmode=require", ssl, false, []flow{tlsFlow}},
		{"psql", md5, verifyFull, ssl, false, []flow{tlsFlow}},
		{"psql", noTLS, "sslmode=prefer", open, false, []flow{bothPlain}},
		{"psql", noTLS, "sslmode=require", noSSL, false, []flow{bothPlain}},
		{"psql", plain, "sslmode=prefer", open, false, []flow{bothPlain}},
		{"psql", plain, "sslmode=require", noSSL, false, []flow{bothPlain}},

		{"pgx", scram, "sslmode=disable", ssl, false, []flow{plainFlow}},
		{"pgx", scram, "sslmode=prefer", ssl, false, retried},
		{"pgx", scram, "sslmode=prefer channel_binding=disable", ssl, false, []flow{tlsFlow}},
		{"pgx", scram, "sslmode=require", refused, true, []flow{tlsFlow}},
		{"pgx", scram, "sslmode=require channel_binding=disable", ssl, false, []flow{tlsFlow}},
		{"pgx", scram, verifyFull + " channel_binding=disable", ssl, false, []flow{tlsFlow}},
		{"pgx", scram, "sslmode=require channel_binding=require", cbPgx, false, []flow{tlsFlow}},
		{"pgx", md5, "sslmode=prefer", ssl, false, []flow{tlsFlow}},
		{"pgx", md5, "sslmode=require", ssl, false, []flow{tlsFlow}},
		// pgx hangs up when the server declines TLS, then connects again.
		{"pgx", noTLS, "sslmode=prefer", open, false, []flow{bothPlain, bothPlain}},
		{"pgx", plain, "sslmode=require", pgxNoSSL, false, []flow{bothPlain}},
	} {
		name := fmt.Sprintf("%s %s %s", tc.client, tc.pg.Addr(), tc.options)
		dsn := fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres password=%s connect_timeout=10 %s", tc.pg.Host, tc.pg.Port, password, tc.options)
		var out string
		var pid int
		var err error
		if tc.client == "psql" {
			out, pid, err = runPid(cg, "psql", "-X", "-w", "-At", "-c", "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)", dsn)
			out = strings.TrimSpace(out)
		} else {
			out, pid, err = runPid(cg, pgxclient(t), dsn, "ssl")
			if v, ok := strings.CutPrefix(strings.TrimSpace(out), "ssl ok "); ok {
				out = map[string]string{"true": ssl, "false": open}[v]
			}
		}
		switch {
		case tc.want == ssl || tc.want == open:
			if err != nil || out != tc.want {
				t.Errorf("%s: %v: %q; want a session whose server hop has ssl=%s", name, err, out, tc.want)
			}
		default:
			t.Logf("%s: %s", name, out)
		}
		switch {
		case tc.want == ssl || tc.want == open:
		case err == nil || !strings.Contains(out, tc.want):
			t.Errorf("%s: %v: %q; want the error %q", name, err, out, tc.want)
		case tc.hint:
			for _, alt := range []string{"sslmode=prefer", "channel_binding=disable", "injected credential"} {
				if !strings.Contains(out, alt) {
					t.Errorf("%s: the hint does not name %q: %s", name, alt, out)
				}
			}
		}
		attempts = append(attempts, attempt{name, pid, tc.flows})
		total += len(tc.flows)
	}

	// The flows each attempt made (told apart by the client's pid), in
	// the order the proxy accepted them (their flow numbers), each hop as
	// expected. Every client has exited, so its flows end; they are logged
	// as they end, which need not be that order: a refused first attempt
	// may finish logging after the client's retry.
	var flows []testenv.LogLine
	testenv.WaitFor(t, 10*time.Second, fmt.Sprintf("%d flow lines", total), func() bool {
		flows = pgFlows(t, d)
		return len(flows) >= total
	})
	for _, a := range attempts {
		var got []testenv.LogLine
		for _, l := range flows {
			if l.String("pid") == fmt.Sprint(a.pid) {
				got = append(got, l)
			}
		}
		sort.SliceStable(got, func(i, j int) bool {
			fi, _ := got[i]["flow"].(float64)
			fj, _ := got[j]["flow"].(float64)
			return fi < fj
		})
		if len(got) != len(a.flows) {
			t.Errorf("%s: %d flows, want %d: %v", a.name, len(got), len(a.flows), got)
			continue
		}
		for i, f := range a.flows {
			if c, s := got[i].String("client_tls") == "true", got[i].String("upstream_tls") == "true"; c != f.client || s != f.server {
				t.Errorf("%s: flow %d had client_tls=%v upstream_tls=%v, want %v %v: %v", a.name, i, c, s, f.client, f.server, got[i])
			}
			// A session that reached its statements: TLS on either hop
			// keeps it on goroutines; a plaintext one runs on the
			// io_uring core where the kernel has it enabled.
			if got[i].String("error") != "" {
				continue
			}
			want := "goroutines"
			if !f.client && !f.server && uringEnabled() {
				want = "io_uring"
			}
			if rc := got[i].String("relay_core"); rc != want {
				t.Errorf("%s: flow %d had relay_core=%q, want %q: %v", a.name, i, rc, want, got[i])
			}
		}
	}

	// A wrong password is the server's to refuse, through the proxy, on
	// either hop's TLS.
	for _, pg := range []*testenv.Postgres{scram, md5} {
		for _, mode := range []string{"sslmode=disable", "sslmode=require channel_binding=disable"} {
			out, err := cg.Run(t, "psql", "-X", "-w", "-Atc", "SELECT 1",
				fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres password=wrong %s", pg.Host, pg.Port, mode))
			if err == nil || !strings.Contains(out, "password authentication failed") {
				t.Errorf("%s %s, wrong password: %v: %s", pg.Addr(), mode, err, out)
			}
		}
	}

	// Whatever happened, no session to a server offering TLS crossed the
	// server hop in plaintext unless its target says disable.
	for _, l := range pgFlows(t, d) {
		if tg := l.String("target"); tg != "notls" && tg != "plain" && l.String("upstream_tls") != "true" {
			t.Errorf("a session to %s crossed the server hop without TLS: %v", tg, l)
		}
	}
	d.WaitLog(t, "client refused: its SCRAM channel binding cannot cross the TLS-terminating proxy", nil)
	d.WaitLog(t, "client ended the login when SCRAM-SHA-256-PLUS was withdrawn; a client with channel_binding=require cannot pass through the TLS-terminating proxy", nil)
}

// runPid runs a command inside the cgroup and returns its combined
// output and its pid.
func runPid(cg *testenv.Cgroup, name string, args ...string) (string, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd, done := cg.Command(ctx, name, args...)
	defer done()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	err := cmd.Wait()
	return out.String(), cmd.Process.Pid, err
}

// pgFlows returns the daemon's postgres flow log lines, in order.
func pgFlows(t *testing.T, d *testenv.Daemon) []testenv.LogLine {
	var out []testenv.LogLine
	for _, l := range d.Logs(t) {
		if l.Message() == "flow" && l.String("protocol") == "postgres" {
			out = append(out, l)
		}
	}
	return out
}

// uringEnabled reports whether this kernel has io_uring enabled for
// everyone (kernel.io_uring_disabled, Linux 6.6 and later, is 0).
func uringEnabled() bool {
	b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
	return err == nil && strings.TrimSpace(string(b)) == "0"
}
