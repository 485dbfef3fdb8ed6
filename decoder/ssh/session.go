package ssh

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// A session channel: the job's ssh asks for a terminal, sets variables,
// asks for agent forwarding or X11, then starts a shell, a command or a
// subsystem. Sluice answers the requests before the start itself and
// opens the host's channel only once the start is decided, replaying
// what the ruleset lets through.

// deniedStatus is the exit status of a refused shell, command or
// subsystem. ssh exits with it, after printing the refusal on stderr.
const deniedStatus = 1

// maxEnv bounds the variables one channel keeps.
const maxEnv = 64

// passedEnv reports whether a variable the job sets is passed to the
// host: the locale (what OpenSSH's sshd accepts by default) and git's
// protocol version. Any other (LD_PRELOAD, BASH_ENV, PATH) is refused, as
// sshd refuses what AcceptEnv does not name.
func passedEnv(name string) bool {
	return name == "LANG" || strings.HasPrefix(name, "LC_") || name == "GIT_PROTOCOL"
}

// sessChan is one session channel.
type sessChan struct {
	s   *session
	ch  ssh.Channel
	num string // the channel's number in the recording

	pty             []byte // the pty-req payload, replayed upstream
	term            string
	env             map[string]string
	envNames        []string
	agent, x11      bool
	x11Payload      []byte
	started         bool
	st              *streams
	up              ssh.Channel
	upMu            sync.Mutex
	relayDone       chan struct{}
	nlOut, nlStderr string
}

func (s *session) serveSession(nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	sc := &sessChan{s: s, ch: ch, env: map[string]string{}, num: s.allocChannel()}
	sc.serve(reqs)
}

// ptyReq is RFC 4254 section 6.2's pty-req.
type ptyReq struct {
	Term          string
	Cols, Rows    uint32
	Width, Height uint32
	Modes         string
}

// serve answers the channel's requests until the job closes it.
func (sc *sessChan) serve(reqs <-chan *ssh.Request) {
	s := sc.s
	for req := range reqs {
		switch req.Type {
		case "pty-req":
			var p ptyReq
			if sc.started || ssh.Unmarshal(req.Payload, &p) != nil {
				req.Reply(false, nil)
				continue
			}
			sc.pty, sc.term = req.Payload, p.Term
			s.sess.Record(record.Metadata, record.Event{Type: record.TypeNote, Reason: "pty-req", Fields: map[string]string{
				"channel": sc.num, "term": p.Term, "cols": strconv.FormatUint(uint64(p.Cols), 10), "rows": strconv.FormatUint(uint64(p.Rows), 10)}})
			req.Reply(true, nil)
		case "env":
			var e struct{ Name, Value string }
			if sc.started || ssh.Unmarshal(req.Payload, &e) != nil || len(sc.envNames) >= maxEnv {
				req.Reply(false, nil)
				continue
			}
			sc.envNames = append(sc.envNames, e.Name)
			ok := passedEnv(e.Name)
			if ok {
				sc.env[e.Name] = e.Value
			}
			req.Reply(ok, nil)
		case "x11-req", "auth-agent-req@openssh.com":
			if sc.started {
				req.Reply(false, nil)
				continue
			}
			kind, text := ruleset.SSHX11, "x11-req"
			if req.Type != "x11-req" {
				kind, text = ruleset.SSHAgentForward, "auth-agent-req"
			}
			c := s.command(kind, text, reqInfo{channel: sc.num, unmaskable: "forwarded connections"}, sc.fill)
			ok := s.allowed(c, nil)
			if ok && kind == ruleset.SSHX11 {
				sc.x11, sc.x11Payload = true, req.Payload
			} else if ok {
				sc.agent = true
			}
			req.Reply(ok, nil)
		case "shell", "exec", "subsystem":
			if sc.started {
				req.Reply(false, nil)
				continue
			}
			sc.started = true
			sc.start(req)
		case "window-change":
			var w struct{ Cols, Rows, Width, Height uint32 }
			if ssh.Unmarshal(req.Payload, &w) == nil {
				s.sess.Record(record.Metadata, record.Event{Type: record.TypeNote, Reason: "window-change", Fields: map[string]string{
					"channel": sc.num, "cols": strconv.FormatUint(uint64(w.Cols), 10), "rows": strconv.FormatUint(uint64(w.Rows), 10)}})
			}
			sc.forward(req)
		case "signal", "break":
			sc.forward(req)
		default:
			// keepalive@openssh.com and unknown requests: refused, as
			// sshd does.
			if req.WantReply {
				req.Reply(false, nil)
			}
		}
	}
	// The job closed the channel: so does the host's.
	sc.upMu.Lock()
	up := sc.up
	sc.upMu.Unlock()
	if up != nil {
		up.Close()
	}
	if sc.relayDone != nil {
		<-sc.relayDone
	}
	sc.ch.Close()
}

// forward passes a request on to the host's channel once it is open.
func (sc *sessChan) forward(req *ssh.Request) {
	sc.upMu.Lock()
	up := sc.up
	sc.upMu.Unlock()
	if up == nil {
		if req.WantReply {
			req.Reply(false, nil)
		}
		return
	}
	ok, err := up.SendRequest(req.Type, req.WantReply, req.Payload)
	if req.WantReply {
		req.Reply(err == nil && ok, nil)
	}
}

// fill adds what the channel asked for so far to a request.
func (sc *sessChan) fill(r *ruleset.SSHRequest) {
	r.Pty, r.Term = sc.pty != nil, sc.term
	if len(sc.envNames) > 0 {
		names := append([]string(nil), sc.envNames...)
		sort.Strings(names)
		r.Env = names
	}
}

// notice writes a line of Sluice's on the job's stderr.
func (sc *sessChan) notice(msg string) {
	nl := "\n"
	if sc.pty != nil {
		nl = "\r\n"
	}
	sc.ch.Stderr().Write([]byte(msg + nl))
}

// exit ends the channel for the job with status and closes it.
func (sc *sessChan) exit(status uint32) {
	sc.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	sc.ch.CloseWrite()
	sc.ch.Close()
}

// start decides a shell, exec or subsystem request and, allowed, opens
// the host's channel and starts the same there.
func (sc *sessChan) start(req *ssh.Request) {
	s := sc.s
	var kind, text, command, subsystem string
	switch req.Type {
	case "shell":
		kind, text = ruleset.SSHShell, "shell"
	case "exec":
		var m struct{ Command string }
		if ssh.Unmarshal(req.Payload, &m) != nil {
			req.Reply(false, nil)
			return
		}
		kind, text, command = ruleset.SSHExec, m.Command, m.Command
	case "subsystem":
		var m struct{ Name string }
		if ssh.Unmarshal(req.Payload, &m) != nil {
			req.Reply(false, nil)
			return
		}
		kind, text, subsystem = ruleset.SSHSubsystem, "subsystem "+m.Name, m.Name
	}
	sc.st = streamsOf(sc.num, kind, sc.pty != nil)
	// Masking works on lines of a command's output; a terminal's screen
	// and a subsystem's packets cannot be rewritten safely.
	o := reqInfo{channel: sc.num}
	if kind != ruleset.SSHExec || sc.pty != nil {
		o.unmaskable = "a terminal or a subsystem (they apply to the output of an exec without a terminal)"
	}
	c := s.command(kind, text, o, func(r *ruleset.SSHRequest) {
		sc.fill(r)
		r.Command, r.Subsystem = command, subsystem
		if command != "" {
			r.Argv, r.Programs = ParseCommand(command)
		}
	})
	// The start is answered first, so that the job's ssh shows what is
	// written on stderr next: the hold's notice, or the refusal.
	req.Reply(true, nil)
	if !s.allowed(c, func(_, msg string) { sc.notice(msg) }) {
		sc.notice(refusal(c))
		sc.exit(deniedStatus)
		return
	}
	// What the host refuses ends the channel as ssh ends one it cannot
	// start: exit status 255, the reason on stderr, and in the recording.
	started := time.Now()
	failed := func(up ssh.Channel, msg string) {
		if up != nil {
			up.Close()
		}
		sc.notice(msg)
		sc.exit(255)
		s.sess.Done(&c.Cmd, c.Verdict, enforcer.Outcome{Duration: time.Since(started), ErrCode: "exit 255",
			Fields: map[string]string{"channel": sc.num}})
	}
	up, upReqs, err := s.up.OpenChannel("session", nil)
	if err != nil {
		failed(nil, "sluice: the host refused a session channel: "+err.Error())
		return
	}
	if msg := sc.replay(up); msg != "" {
		failed(up, msg)
		return
	}
	ok, err := up.SendRequest(req.Type, true, req.Payload)
	if err != nil || !ok {
		failed(up, fmt.Sprintf("sluice: the host refused the %s request", req.Type))
		return
	}
	sc.upMu.Lock()
	sc.up = up
	sc.upMu.Unlock()
	sc.relayDone = make(chan struct{})
	if kind == ruleset.SSHSubsystem && subsystem == "sftp" {
		go sc.sftp(c, up, upReqs)
		return
	}
	go sc.relay(c, up, upReqs)
}

// replay sends the host's channel what the job asked for before the
// start and the ruleset let through. It returns why it failed, or "".
func (sc *sessChan) replay(up ssh.Channel) string {
	if sc.pty != nil {
		if ok, err := up.SendRequest("pty-req", true, sc.pty); err != nil || !ok {
			return "sluice: the host refused a terminal (pty-req)"
		}
	}
	for _, name := range slices.Sorted(maps.Keys(sc.env)) {
		up.SendRequest("env", false, ssh.Marshal(struct{ Name, Value string }{name, sc.env[name]}))
	}
	if sc.x11 {
		if ok, err := up.SendRequest("x11-req", true, sc.x11Payload); err != nil || !ok {
			return "sluice: the host refused X11 forwarding"
		}
		sc.s.mu.Lock()
		sc.s.x11 = true
		sc.s.mu.Unlock()
	}
	if sc.agent {
		up.SendRequest("auth-agent-req@openssh.com", false, nil)
		sc.s.mu.Lock()
		sc.s.agent = true
		sc.s.mu.Unlock()
	}
	return ""
}

// relay carries a shell's or a command's streams both ways, with the
// result gate and masking on what reaches the job, and passes the exit
// status on once all output did.
func (sc *sessChan) relay(c *decoder.Command, up ssh.Channel, upReqs <-chan *ssh.Request) {
	s := sc.s
	defer close(sc.relayDone)
	start := time.Now()
	o := &output{sc: sc, c: c, up: up}
	go func() {
		s.copyRecorded(up, sc.ch, record.DirClientToServer, sc.st.stdin)
		up.CloseWrite()
	}()
	var outWG sync.WaitGroup
	outWG.Add(2)
	go func() {
		defer outWG.Done()
		o.copy(sc.ch, up, sc.st.stdout)
	}()
	go func() {
		defer outWG.Done()
		o.copy(sc.ch.Stderr(), up.Stderr(), sc.st.stderr)
	}()
	var exit string
	for r := range upReqs {
		switch r.Type {
		case "exit-status", "exit-signal":
			outWG.Wait()
			if o.stopped() {
				continue
			}
			if r.Type == "exit-status" {
				var m struct{ Status uint32 }
				if ssh.Unmarshal(r.Payload, &m) == nil && m.Status != 0 {
					exit = "exit " + strconv.FormatUint(uint64(m.Status), 10)
				}
			} else {
				var m struct{ Signal string }
				if ssh.Unmarshal(r.Payload, &m) == nil {
					exit = "signal " + m.Signal
				}
			}
			sc.ch.SendRequest(r.Type, false, r.Payload)
		case "eow@openssh.com":
			sc.ch.SendRequest(r.Type, false, r.Payload)
		default:
			if r.WantReply {
				r.Reply(false, nil)
			}
		}
	}
	outWG.Wait()
	if o.stopped() {
		exit = "exit " + strconv.Itoa(deniedStatus)
	}
	sc.ch.CloseWrite()
	sc.ch.Close()
	s.sess.Done(&c.Cmd, c.Verdict, enforcer.Outcome{Bytes: o.total(), Duration: time.Since(start), ErrCode: exit,
		Fields: map[string]string{"channel": sc.st.channel}})
}

// output is what a channel sends the job, on stdout and stderr: counted
// for result rules, masked line by line under a mask verdict, recorded.
type output struct {
	sc *sessChan
	c  *decoder.Command
	up ssh.Channel

	mu      sync.Mutex
	gate    decoder.ResultGate
	bytes   int64
	refused bool
}

func (o *output) stopped() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.refused
}

func (o *output) total() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

// admit counts n more bytes and decides the result again where the
// ruleset says it may change. A hold waits here, with nothing read from
// the host meanwhile. It returns false once the output is refused: the
// command is stopped and the job told.
func (o *output) admit(n int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.refused {
		return false
	}
	o.bytes += int64(n)
	sc := o.sc
	refused, v := sc.s.decider.CheckResult(sc.s.ctx, o.c, &o.gate, 0, o.bytes, func(_, msg string) { sc.notice(msg) })
	if !refused {
		return true
	}
	o.refused = true
	sc.notice(fmt.Sprintf("sluice: the output of %s was stopped after %d bytes by rule %s: %s", o.c.Cmd.Text, o.bytes-int64(n), decoder.RuleID(v), v.Decision.Reason))
	// Stop the command on the host: a signal, then the channel's close.
	o.up.SendRequest("signal", false, ssh.Marshal(struct{ Signal string }{"KILL"}))
	o.up.Close()
	sc.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{deniedStatus}))
	return false
}

// copy relays one output stream to the job.
func (o *output) copy(dst io.Writer, src io.Reader, fields map[string]string) {
	s := o.sc.s
	masker := o.c.Masker
	if o.c.Verdict.Action != ruleset.Mask {
		masker = nil
	}
	var lm *lineMasker
	if masker != nil {
		lm = &lineMasker{text: masker.Text}
	}
	buf := make([]byte, 32<<10)
	emit := func(b []byte) bool {
		if len(b) == 0 {
			return true
		}
		if !o.admit(len(b)) {
			return false
		}
		if s.sess.WireStream(record.DirServerToClient, fields, b) != nil {
			return false
		}
		_, err := dst.Write(b)
		return err == nil
	}
	for {
		n, err := src.Read(buf)
		if n > 0 {
			out := buf[:n]
			if lm != nil {
				out = lm.write(out)
			}
			if !emit(out) {
				io.Copy(io.Discard, src)
				return
			}
		}
		if err != nil {
			if lm != nil {
				emit(lm.flush())
			}
			return
		}
	}
}

// maxLine is the longest line masked whole; a longer one is masked in
// pieces of this size.
const maxLine = 64 << 10

// lineMasker masks a byte stream line by line with a masker's
// detectors: a value is found when it lies within one line.
type lineMasker struct {
	text func(string) (string, bool)
	buf  []byte
	out  []byte
}

// write adds b and returns the masked complete lines so far.
func (l *lineMasker) write(b []byte) []byte {
	l.buf = append(l.buf, b...)
	l.out = l.out[:0]
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 && len(l.buf) < maxLine {
			break
		}
		end := i + 1
		if i < 0 {
			end = maxLine
		}
		m, _ := l.text(string(l.buf[:end]))
		l.out = append(l.out, m...)
		l.buf = l.buf[end:]
	}
	l.buf = append(l.buf[:0:0], l.buf...)
	return l.out
}

// flush returns the masked rest, at the end of the stream.
func (l *lineMasker) flush() []byte {
	if len(l.buf) == 0 {
		return nil
	}
	m, _ := l.text(string(l.buf))
	l.buf = nil
	return []byte(m)
}
