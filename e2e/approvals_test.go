package e2e

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/internal/testenv"
)

func holdRules(addr string) string {
	return fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "ci" {
  targets = ["pg"]
  record  = "full"

  hold "export" {
    when      = statement.kind == "copy_out"
    approvers = ["local-admin"]
    timeout   = "4s"
    reason    = "exports need a human"
  }

  hold "big-read" {
    when      = result.rows > 1000
    approvers = ["local-admin"]
    timeout   = "20s"
    reason    = "large reads need a human"
  }

  hold "big-bytes" {
    when      = result.bytes > 1000000
    approvers = ["local-admin"]
    timeout   = "20s"
    reason    = "large reads need a human"
  }
}
`, addr)
}

// background starts psql inside the cgroup as uid and returns a function
// that waits for it and returns its output.
func background(t *testing.T, cg *testenv.Cgroup, uid int, args []string) func() (string, error) {
	t.Helper()
	cmd, done := cg.Command(t.Context(), args[0], args[1:]...)
	if uid != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}
		cmd.Env = append(os.Environ(), "HOME=/")
	}
	var out strings.Builder
	var mu sync.Mutex
	w := writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() (string, error) {
		err := cmd.Wait()
		done()
		mu.Lock()
		defer mu.Unlock()
		return out.String(), err
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// pendingHold waits for one pending approval request and returns it.
func pendingHold(t *testing.T, d *testenv.Daemon) approve.Request {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		out, err := d.Sluice(t, "approvals", "list", "--json", "--socket", d.Socket)
		if err != nil {
			t.Fatalf("approvals list: %v\n%s", err, out)
		}
		var l []approve.Request
		json.Unmarshal([]byte(out), &l)
		for _, r := range l {
			if r.State == approve.StatePending {
				return r
			}
		}
	}
	t.Fatal("no pending approval request within 10s")
	return approve.Request{}
}

// TestApprovalHolds: a held COPY waits for sluice approve, or ends with an
// error on deny or timeout; a SELECT over the row threshold pauses after
// exactly N rows and, refused, is cancelled on the server; one over the
// byte threshold pauses at the row that crosses it and, approved, goes on;
// the job's own identity cannot approve; a webhook hears of every request
// and decision.
func TestApprovalHolds(t *testing.T) {
	cg := testenv.NewCgroup(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Host: "127.0.0.2"})
	hookAddr, hooks := webhookReceiver(t, 16)
	d := testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: cg, Rules: holdRules(pg.Addr()),
		Body: fmt.Sprintf("approvals {\n  webhook = \"http://%s/hook\"\n}\n", hookAddr)})
	admin(t, pg, "create table users(id int, email text); insert into users select i, 'p'||i||'@example.com' from generate_series(1, 5000) i")
	uid := nobody(t)
	copyArgs := pg.PsqlArgs("", 0, "COPY (SELECT id FROM users WHERE id <= 3 ORDER BY id) TO STDOUT")

	// Approved: the COPY completes after sluice approve.
	wait := background(t, cg, uid, copyArgs)
	req := pendingHold(t, d)
	if req.Rule != "ci/hold/export" || req.Stage != approve.StageBefore || !strings.Contains(req.Statement, "COPY") {
		t.Errorf("pending request = %+v", req)
	}
	if out, err := d.Sluice(t, "approve", req.ID, "--socket", d.Socket, "--comment", "looks fine"); err != nil || !strings.Contains(out, "approved") {
		t.Fatalf("sluice approve: %v\n%s", err, out)
	}
	out, err := wait()
	if err != nil || !strings.Contains(out, "1\n2\n3") || !strings.Contains(out, "sluice approve "+req.ID) {
		t.Errorf("approved COPY: %v\n%s\nwant the notice with the approve command, then the rows", err, out)
	}

	// Denied: an error, nothing exported.
	wait = background(t, cg, uid, copyArgs)
	req = pendingHold(t, d)
	if out, err := d.Sluice(t, "deny", req.ID, "--socket", d.Socket); err != nil {
		t.Fatalf("sluice deny: %v\n%s", err, out)
	}
	out, err = wait()
	if err == nil || !strings.Contains(out, "denied") || strings.Contains(out, "\n1\n") {
		t.Errorf("denied COPY: %v\n%s", err, out)
	}

	// Expired: the 4s timeout denies.
	wait = background(t, cg, uid, copyArgs)
	pendingHold(t, d)
	out, err = wait()
	if err == nil || !strings.Contains(out, "no decision within 4s") {
		t.Errorf("expired COPY: %v\n%s", err, out)
	}

	// The job's own identity cannot approve: a job running as root, root
	// approving locally.
	wait = background(t, cg, 0, copyArgs)
	req = pendingHold(t, d)
	if out, err := d.Sluice(t, "approve", req.ID, "--socket", d.Socket); err == nil {
		t.Errorf("root approved a request of a job running as root: %s", out)
	}
	d.Sluice(t, "deny", req.ID, "--socket", d.Socket)
	wait()

	// A result over 1000 rows pauses after 1000; refused, the server
	// cancels the query and the client gets an error.
	wait = background(t, cg, uid, pg.PsqlArgs("", 0, "SELECT id, email FROM users ORDER BY id"))
	req = pendingHold(t, d)
	if req.Stage != approve.StageResult || req.Rows != 1000 {
		t.Errorf("paused request = stage %s rows %d, want result after 1000", req.Stage, req.Rows)
	}
	d.Sluice(t, "deny", req.ID, "--socket", d.Socket)
	out, err = wait()
	if err == nil || !strings.Contains(out, "denied") {
		t.Errorf("refused big read: %v\n%s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	if n := admin(t, pg, "select count(*) from pg_stat_activity where state = 'active' and query like 'SELECT id, email FROM users%'"); n != "0" {
		t.Errorf("the refused query is still active on the server (%s)", n)
	}
	// The recording of that session holds exactly the 1000 rows sent.
	sessions := listSessions(t, d, "--verdict", "hold")
	var rows int
	for _, s := range sessions {
		b, _ := os.ReadFile(s.Path)
		if !strings.Contains(string(b), "SELECT id, email FROM users") {
			continue
		}
		rows = countDataRows(t, string(b))
	}
	if rows != 1000 {
		t.Errorf("the recording holds %d DataRows, want exactly the 1000 sent", rows)
	}

	// A result over 1,000,000 bytes pauses at the row that crosses it:
	// each DataRow of blobs is 100,006 bytes, so after 9 rows. Approved,
	// the client gets every row.
	admin(t, pg, "create table blobs(id int, payload text); insert into blobs select i, repeat('x', 100000) from generate_series(1, 50) i")
	wait = background(t, cg, uid, pg.PsqlArgs("", 0, "SELECT payload FROM blobs ORDER BY id"))
	req = pendingHold(t, d)
	if req.Rule != "ci/hold/big-bytes" || req.Stage != approve.StageResult || req.Rows != 9 {
		t.Errorf("paused request = rule %s stage %s rows %d, want ci/hold/big-bytes at the result after 9 rows", req.Rule, req.Stage, req.Rows)
	}
	if out, err := d.Sluice(t, "approve", req.ID, "--socket", d.Socket); err != nil {
		t.Fatalf("sluice approve: %v\n%s", err, out)
	}
	out, err = wait()
	if n := strings.Count(out, strings.Repeat("x", 100000)); err != nil || n != 50 {
		t.Errorf("approved big read: %v, %d of 50 rows", err, n)
	}

	// The webhook heard requests and decisions.
	kinds := map[string]int{}
	for len(hooks) > 0 {
		kinds[(<-hooks)["kind"].(string)]++
	}
	if kinds["request"] < 4 || kinds["decision"] < 4 {
		t.Errorf("webhook deliveries %v, want every request and decision", kinds)
	}
}

// webhookReceiver serves a webhook on loopback until the test ends and
// hands each delivery's JSON body to the channel (of capacity n).
func webhookReceiver(t *testing.T, n int) (addr string, hooks chan map[string]any) {
	hooks = make(chan map[string]any, n)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &m)
		hooks <- m
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), hooks
}

// countDataRows decodes a recording's server-to-client wire events and
// counts the DataRow messages in them.
func countDataRows(t *testing.T, rec string) int {
	var stream []byte
	re := regexp.MustCompile(`"dir":"s2c"[^}]*?"data":"([A-Za-z0-9+/=]+)"|"data":"([A-Za-z0-9+/=]+)"[^}]*?"dir":"s2c"`)
	for _, m := range re.FindAllStringSubmatch(rec, -1) {
		enc := m[1] + m[2]
		b, _ := base64.StdEncoding.DecodeString(enc)
		stream = append(stream, b...)
	}
	n := 0
	for len(stream) >= 5 {
		l := int(binary.BigEndian.Uint32(stream[1:]))
		if stream[0] == 'D' {
			n++
		}
		if len(stream) < 1+l {
			break
		}
		stream = stream[1+l:]
	}
	return n
}
