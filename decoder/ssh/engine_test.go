package ssh

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/decodertest"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/internal/testenv"
	"github.com/sluicehq/sluice/ruleset"
)

// The engine tests run the decoder between Go's SSH client (over the
// harness's client hop) and OpenSSH's sshd on loopback, logging in with a
// certificate minted per session from a user CA the sshd trusts.

const engineRules = `
mode = "enforce"
target "host" {
  protocol    = "ssh"
  address     = [%q]
  known_hosts = %q
  credential "deploy" {
    user     = "deploy"
    ssh_auth = "certificate"
    key_file = %q
    policies = ["*"]
  }
}
policy "ci" {
  targets = ["*"]
  record  = "full"
  credential "deploy" {}
  deny "dumps" {
    when   = contains(ssh.programs, "pg_dump")
    reason = "database dumps do not leave over ssh"
  }
  deny "tunnels" {
    when   = contains(["direct_tcpip", "tcpip_forward", "agent_forward", "x11"], ssh.kind) && !(
      (ssh.kind == "direct_tcpip" && ssh.forward_host == "127.0.0.1" && ssh.forward_port == %d) ||
      (ssh.kind == "tcpip_forward" && ssh.forward_host == "127.0.0.1"))
    reason = "no tunnels from CI"
  }
  deny "etc" {
    when   = sftp.op != "" && glob("/etc/*", sftp.path)
    reason = "system files stay on the host"
  }
  mask "config-secrets" {
    when   = ssh.kind == "exec" && contains(ssh.programs, "cat")
    detect = ["email", "aws_access_key"]
    using  = "redact"
  }
  hold "deploys" {
    when      = ssh.command == "echo deployed"
    approvers = ["group:security"]
    reason    = "deploys need a human"
  }
  hold "big-output" {
    when      = ssh.kind == "exec" && result.bytes > 100000
    approvers = ["group:security"]
    reason    = "large outputs need a human"
  }
}
default { action = "deny" }
`

type engine struct {
	h      *decodertest.Harness
	sshd   *testenv.SSHD
	hostCA ed25519.PrivateKey
	client *ssh.Client
	echo   int // the port of the one forward the rules allow
}

// startEngine starts sshd, the decoder and a Go SSH client through it.
// holder, when given, waits on hold verdicts.
func startEngine(t *testing.T, holder ...func(context.Context, enforcer.HoldRequest) enforcer.HoldOutcome) *engine {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("/usr/sbin/sshd"); err != nil {
		t.Skip("no sshd (apt-get install openssh-server)")
	}
	dir := t.TempDir()
	caPub, caPriv, _ := ed25519.GenerateKey(rand.Reader)
	caFile := filepath.Join(dir, "user_ca")
	block, err := ssh.MarshalPrivateKey(caPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sshd := testenv.StartSSHD(t, testenv.SSHDOptions{Users: []string{"deploy"}, TrustedUserCAKeys: []ssh.PublicKey{mustPub(t, caPub)}})
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(sshd.KnownHostsLine()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, hostCA, _ := ed25519.GenerateKey(rand.Reader)
	echo := echoPort(t)
	p, _ := decoder.Lookup(ruleset.ProtoSSH)
	handler := p.New(decoder.Env{SSHHostCA: hostCA, MaskKey: make([]byte, 32)})
	opts := decodertest.Options{
		Handler: func(ctx context.Context, f *decoder.Flow, c net.Conn, dial decoder.DialFunc) decoder.Result {
			f.Session.Secrets = credential.NewStore()
			f.Identity.Job = "github:42@7"
			return handler(ctx, f, c, dial)
		},
		Rules:    fmt.Sprintf(engineRules, sshd.Addr, kh, caFile, echo),
		Target:   "host",
		Upstream: sshd.Addr,
		Identity: ruleset.Identity{Level: ruleset.LevelOIDC, Claims: map[string]string{"repository": "acme/api", "ref": "refs/heads/main"}},
		Record:   record.Full,
		Timeout:  20 * time.Second,
	}
	if len(holder) > 0 {
		opts.Holder = holder[0]
	}
	h := decodertest.Start(t, opts)
	caSigner, _ := ssh.NewSignerFromSigner(hostCA)
	checker := &ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		return bytes.Equal(k.Marshal(), caSigner.PublicKey().Marshal())
	}}
	conn, chans, reqs, err := ssh.NewClientConn(h.Client, sshd.Addr, &ssh.ClientConfig{
		User:              "deploy",
		HostKeyCallback:   checker.CheckHostKey,
		HostKeyAlgorithms: []string{ssh.CertAlgoED25519v01},
		Timeout:           20 * time.Second,
	})
	if err != nil {
		t.Fatalf("ssh through the decoder: %v", err)
	}
	c := ssh.NewClient(conn, chans, reqs)
	t.Cleanup(func() { c.Close() })
	return &engine{h: h, sshd: sshd, hostCA: hostCA, client: c, echo: echo}
}

func mustPub(t *testing.T, k ed25519.PublicKey) ssh.PublicKey {
	p, err := ssh.NewPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// run runs cmd and returns its stdout, stderr and exit status.
func (e *engine) run(t *testing.T, cmd string) (string, string, int) {
	t.Helper()
	s, err := e.client.NewSession()
	if err != nil {
		t.Fatalf("new session: %v", err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr = &out, &errb
	err = s.Run(cmd)
	status := 0
	var ee *ssh.ExitError
	switch {
	case errors.As(err, &ee):
		status = ee.ExitStatus()
	case err != nil:
		t.Fatalf("run %q: %v", cmd, err)
	}
	return out.String(), errb.String(), status
}

func TestEngineExec(t *testing.T) {
	e := startEngine(t)
	out, errOut, status := e.run(t, "echo hello; echo oops >&2; exit 3")
	if out != "hello\n" || errOut != "oops\n" || status != 3 {
		t.Fatalf("exec: stdout %q stderr %q status %d; want hello, oops, 3", out, errOut, status)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	out, errOut, status = e.run(t, "pg_dump prod; touch "+marker)
	if status != deniedStatus || out != "" || !strings.Contains(errOut, "denied by rule ci/deny/dumps: database dumps do not leave over ssh") {
		t.Fatalf("denied exec: stdout %q stderr %q status %d", out, errOut, status)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the denied command ran on the host")
	}
	// The session stays usable.
	if out, _, status := e.run(t, "echo again"); out != "again\n" || status != 0 {
		t.Fatalf("after a denial: %q %d", out, status)
	}
	// The host logged the session certificate with the job in its key id.
	e.sshd.WaitLog(t, `ID sluice job=github:42@7 repository=acme/api ref=refs/heads/main identity=oidc flow=1 credential=deploy`)
	e.client.Close()
	e.h.Wait()
	var sawDeny, sawExit bool
	for _, ev := range e.h.Recorder.Events() {
		switch {
		case ev.Type == record.TypeStatement && ev.Verdict == "deny" && ev.Rule == "ci/deny/dumps":
			sawDeny = true
		case ev.Type == record.TypeResult && ev.ErrCode == "exit 3" && ev.Fields["channel"] == "0":
			sawExit = true
		}
	}
	if !sawDeny || !sawExit {
		t.Fatalf("recording lacks the denial (%v) or the exit status (%v): %+v", sawDeny, sawExit, e.h.Recorder.Events())
	}
}

func TestEngineForwardsRefused(t *testing.T) {
	e := startEngine(t)
	_, err := e.client.Dial("tcp", "127.0.0.1:5432")
	if err == nil || !strings.Contains(err.Error(), "administratively prohibited") || !strings.Contains(err.Error(), "ci/deny/tunnels") {
		t.Fatalf("direct-tcpip: %v, want a prohibited open failure naming the rule", err)
	}
	if _, err := e.client.Listen("tcp", "0.0.0.0:0"); err == nil {
		t.Fatal("a remote forward was allowed")
	}
	s, _ := e.client.NewSession()
	defer s.Close()
	if ok, err := s.SendRequest("auth-agent-req@openssh.com", true, nil); ok || err != nil {
		t.Fatalf("agent forwarding: %v %v, want refused", ok, err)
	}
	x11 := ssh.Marshal(struct {
		Single        bool
		Proto, Cookie string
		Screen        uint32
	}{false, "MIT-MAGIC-COOKIE-1", "00112233445566778899aabbccddeeff", 0})
	if ok, err := s.SendRequest("x11-req", true, x11); ok || err != nil {
		t.Fatalf("X11 forwarding: %v %v, want refused", ok, err)
	}
	// The session's channel still runs a command.
	if out, err := s.Output("echo still-here"); err != nil || string(out) != "still-here\n" {
		t.Fatalf("after the refusals: %v %q", err, out)
	}
}

func TestEngineSFTP(t *testing.T) {
	e := startEngine(t)
	c, err := sftp.NewClient(e.client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	f, err := c.Create(p)
	if err != nil {
		t.Fatalf("create %s: %#v", p, err)
	}
	data := bytes.Repeat([]byte("sluice "), 50000)
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file written through sftp: %d bytes, %v", len(got), err)
	}
	r, err := c.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("file read through sftp: %d bytes, %v", len(back), err)
	}
	if _, err := c.Open("/etc/hostname"); err == nil || !errors.Is(err, os.ErrPermission) {
		t.Fatalf("open /etc/hostname: %v, want permission denied", err)
	}
	// The ruleset sees the path the host acts on: relative paths are
	// resolved, and a NUL byte (where the host's C string would end) is
	// refused.
	if _, err := c.Open(strings.Repeat("../", 30) + "etc/hostname"); err == nil || !errors.Is(err, os.ErrPermission) {
		t.Fatalf("open ../../etc/hostname: %v, want permission denied", err)
	}
	if _, err := c.Open("/etc/hostname\x00/../.." + p); err == nil {
		t.Fatal("open of a path with a NUL byte succeeded")
	}
	// A handle opened for reading takes no write.
	rf, err := c.OpenFile(p, os.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rf.Write([]byte("x")); err == nil {
		t.Fatal("a write on a handle opened for reading succeeded")
	}
	rf.Close()
	if err := c.Remove(p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("removed through sftp, but: %v", err)
	}
}

func TestEngineHolds(t *testing.T) {
	t.Run("command approved", func(t *testing.T) {
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		e := startEngine(t, decodertest.BrokerHolder(broker, time.Minute))
		s, err := e.client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var out, errb testenv.Buffer
		s.Stdout, s.Stderr = &out, &errb
		done := make(chan error, 1)
		go func() { done <- s.Run("echo deployed") }()
		testenv.WaitFor(t, 10*time.Second, "the hold's notice on stderr", func() bool {
			return strings.Contains(errb.String(), "held for approval") && len(broker.List()) == 1
		})
		if out.String() != "" {
			t.Fatalf("the held command ran before approval: %q", out.String())
		}
		if _, err := broker.Decide(broker.List()[0].ID, approve.Approver{Kind: approve.KindOIDC, Subject: "sec", Groups: []string{"security"}}, true, ""); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil || out.String() != "deployed\n" {
			t.Fatalf("approved command: %v, stdout %q stderr %q", err, out.String(), errb.String())
		}
	})
	t.Run("command expires", func(t *testing.T) {
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		e := startEngine(t, decodertest.BrokerHolder(broker, 300*time.Millisecond))
		out, errOut, status := e.run(t, "echo deployed")
		if status != deniedStatus || out != "" || !strings.Contains(errOut, "held for approval") || !strings.Contains(errOut, "by rule ci/hold/deploys") {
			t.Fatalf("expired hold: stdout %q stderr %q status %d", out, errOut, status)
		}
	})
	t.Run("output stopped at the limit", func(t *testing.T) {
		broker := approve.NewBroker(approve.Options{})
		t.Cleanup(func() { broker.Close(context.Background()) })
		e := startEngine(t, decodertest.BrokerHolder(broker, 300*time.Millisecond))
		out, errOut, status := e.run(t, "head -c 1000000 /dev/zero")
		if status != deniedStatus || len(out) > 100000 || !strings.Contains(errOut, "was stopped after") || !strings.Contains(errOut, "ci/hold/big-output") {
			t.Fatalf("output hold: %d bytes out, stderr %q, status %d; want at most 100000 bytes, the rule, status %d", len(out), errOut, status, deniedStatus)
		}
		// Below the limit, output passes whole.
		if out, _, status := e.run(t, "head -c 50000 /dev/zero"); len(out) != 50000 || status != 0 {
			t.Fatalf("small output: %d bytes, status %d", len(out), status)
		}
	})
	t.Run("no approvals configured", func(t *testing.T) {
		e := startEngine(t)
		out, errOut, status := e.run(t, "echo deployed")
		if status != deniedStatus || out != "" || !strings.Contains(errOut, "ci/hold/deploys") {
			t.Fatalf("hold without approvals: stdout %q stderr %q status %d", out, errOut, status)
		}
	})
}

// TestEngineChannelCap: a job cannot open channels without bound; the
// ones past the cap are refused and the session goes on.
func TestEngineChannelCap(t *testing.T) {
	e := startEngine(t)
	var open []*ssh.Session
	defer func() {
		for _, s := range open {
			s.Close()
		}
	}()
	for i := 0; i < maxChannels; i++ {
		s, err := e.client.NewSession()
		if err != nil {
			t.Fatalf("channel %d: %v", i, err)
		}
		open = append(open, s)
	}
	if _, err := e.client.NewSession(); err == nil || !strings.Contains(err.Error(), "at most 64 channels") {
		t.Fatalf("channel past the cap: %v", err)
	}
	open[0].Close()
	open = open[1:]
	testenv.WaitFor(t, 10*time.Second, "a channel slot freed", func() bool {
		s, err := e.client.NewSession()
		if err != nil {
			return false
		}
		open = append(open, s)
		return true
	})
}

// TestEngineMaskedOutput: a mask rule on an exec masks its output line by
// line, on stdout and stderr, while the rest passes byte for byte.
func TestEngineMaskedOutput(t *testing.T) {
	e := startEngine(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "app.conf")
	conf := "listen = 8080\nadmin = ops@example.com\nkey = AKIAIOSFODNN7EXAMPLE\n"
	if err := os.WriteFile(f, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, status := e.run(t, "cat "+f+"; cat "+f+" >&2")
	if status != 0 || !strings.HasPrefix(out, "listen = 8080\n") || strings.Contains(out, "ops@example.com") || strings.Contains(out, "AKIAIOSFODNN7EXAMPLE") ||
		strings.Contains(errOut, "ops@example.com") || !strings.Contains(errOut, "listen = 8080") {
		t.Fatalf("masked cat: stdout %q stderr %q status %d", out, errOut, status)
	}
	// Without the mask rule (no cat), the same bytes pass unchanged.
	if out, _, _ := e.run(t, "tail -n +1 "+f); out != conf {
		t.Fatalf("unmasked tail: %q", out)
	}
	// A terminal cannot be masked: refused.
	s, _ := e.client.NewSession()
	defer s.Close()
	var errb testenv.Buffer
	s.Stderr = &errb
	if err := s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Run("cat " + f); err == nil || !strings.Contains(errb.String(), "cannot be applied to a terminal") {
		t.Fatalf("masked cat on a terminal: %v %q", err, errb.String())
	}
	// The recording says what was enforced: a deny, on its channel.
	e.client.Close()
	e.h.Wait()
	var verdicts []string
	for _, ev := range e.h.Recorder.EventsOf(record.TypeStatement) {
		verdicts = append(verdicts, ev.Fields["channel"]+":"+ev.Verdict)
	}
	if got := strings.Join(verdicts, " "); got != "0:mask 1:allow 2:deny" {
		t.Errorf("recorded statements (channel:verdict) %s, want 0:mask 1:allow 2:deny", got)
	}
}

// echoPort starts a TCP echo server on loopback for the test and returns
// its port: the one forward the engine's rules allow.
func echoPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go serveEcho(ln)
	return ln.Addr().(*net.TCPAddr).Port
}

// serveEcho echoes back what each connection ln accepts sends, until ln
// is closed.
func serveEcho(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// echoRoundTrip writes a line to c and reads it back.
func echoRoundTrip(t *testing.T, c net.Conn, line string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(line))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != line {
		t.Fatalf("echo: %q %v", buf, err)
	}
}

// TestEngineForwardsAllowed: forwards a rule allows work both ways: a
// direct-tcpip channel to the allowed port (ssh -L), and a remote listen
// whose connections come back as forwarded-tcpip channels (ssh -R).
func TestEngineForwardsAllowed(t *testing.T) {
	e := startEngine(t)
	c, err := e.client.Dial("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(e.echo)))
	if err != nil {
		t.Fatalf("allowed direct-tcpip: %v", err)
	}
	echoRoundTrip(t, c, "through -L\n")
	c.Close()

	ln, err := e.client.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("allowed remote forward: %v", err)
	}
	defer ln.Close()
	go serveEcho(ln)
	// The host listens (sshd, on this machine): a connection to it comes
	// back through Sluice to the client's echo.
	rc, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial the remote forward's listener %s: %v", ln.Addr(), err)
	}
	defer rc.Close()
	echoRoundTrip(t, rc, "through -R\n")
}
