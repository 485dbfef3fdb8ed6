package ssh

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// Params are one decoded session's parts.
type Params struct {
	Flow   *decoder.Flow
	Client net.Conn
	Dial   decoder.DialFunc
	// Injection is the credential the flow was granted.
	Injection *enforcer.Injection
	// HostCA signs the host certificate presented to the job; HostKey is
	// the key it certifies.
	HostCA  crypto.Signer
	HostKey ssh.Signer
	// Masks builds the maskers of mask verdicts; nil refuses them.
	Masks *mask.Cache
	Log   hclog.Logger
}

// Stats are a session's totals, for the flow log.
type Stats struct {
	decoder.SessionStats
	Channels  int64
	HostKey   string
	CertKeyID string
}

// Serve runs one decoded SSH session: the upstream login first (so that a
// host that cannot be reached, or refuses the credential, is reported to
// the job before its handshake, as an SSH disconnect naming the cause),
// then the job's handshake, then every channel and global request decided
// by the ruleset until either side ends. It owns p.Client and closes it.
func Serve(ctx context.Context, p Params) (Stats, error) {
	if p.Log == nil {
		p.Log = hclog.NewNullLogger()
	}
	s := &session{p: p, sess: p.Flow.Session}
	s.decider = decoder.Decider{Session: s.sess, Masks: p.Masks}
	cc := &decoder.CountConn{Conn: p.Client}
	err := s.run(ctx, cc)
	c := cc.Counts()
	st := Stats{SessionStats: decoder.SessionStats{BytesFromClient: c.ClientToServer, BytesToClient: c.ServerToClient,
		User: p.Injection.User, ClientUser: s.clientUser, Credential: p.Injection.Name},
		Channels: s.channels.Load(), HostKey: s.hostKey, CertKeyID: s.certID}
	return st, err
}

// session is one job's SSH connection and Sluice's login to the host.
type session struct {
	p       Params
	sess    *enforcer.Session
	decider decoder.Decider
	ctx     context.Context

	client *ssh.ServerConn
	up     ssh.Conn

	clientUser, hostKey, certID string
	channels                    atomic.Int64

	mu sync.Mutex
	// forwards are the remote forwards (ssh -R) the ruleset allowed, by
	// "host:port" as the host reports them on forwarded channels.
	forwards map[string]bool
	// agent and x11 say a session channel was allowed agent forwarding or
	// X11, so the host may open such channels back.
	agent, x11 bool
	// noMoreSessions is set by the client's no-more-sessions request.
	noMoreSessions bool
	open           int // channels open now (maxChannels)
	nextChan       uint32
	wg             sync.WaitGroup
}

func (s *session) run(ctx context.Context, cc net.Conn) error {
	s.ctx = ctx
	p := s.p
	up, err := login(ctx, p.Flow, p.Dial, p.Injection)
	if err != nil {
		msg := err.Error()
		if le, ok := err.(*loginError); ok {
			msg = le.msg
		}
		p.Log.Warn("upstream ssh login failed", "credential", p.Injection.Name, "error", err)
		s.sess.Record(record.Metadata, record.Event{Type: record.TypeError, Reason: "upstream login: " + err.Error()})
		refuse(cc, "sluice: "+msg)
		return err
	}
	s.up = up.conn
	s.hostKey, s.certID = up.hostKey, up.certID
	defer up.conn.Close()

	keys, err := hostKeys(p.HostCA, p.HostKey, p.Flow.Dest.String())
	if err != nil {
		refuse(cc, "sluice: cannot make a host certificate")
		return err
	}
	cfg := &ssh.ServerConfig{
		// Who the job is comes from the kernel and its OIDC token: the
		// job may log in with no key at all, or with any it has (never
		// passed on).
		NoClientAuth: true,
		PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) {
			return nil, nil
		},
		ServerVersion: version,
	}
	for _, k := range keys {
		cfg.AddHostKey(k)
	}
	deadline := time.Now().Add(loginTimeout)
	cc.SetDeadline(deadline)
	jc, ciphers := pickJobCiphers(cc, deadline)
	cfg.Ciphers = ciphers
	client, chans, reqs, err := ssh.NewServerConn(jc, cfg)
	if err != nil {
		return fmt.Errorf("job's ssh handshake: %w", err)
	}
	cc.SetDeadline(time.Time{})
	s.client = client
	defer client.Close()
	s.clientUser = client.User()
	fields := map[string]string{"client_user": s.clientUser, "user": p.Injection.User, "credential": p.Injection.Name,
		"host_key": s.hostKey, "client_version": string(client.ClientVersion()), "server_version": string(up.conn.ServerVersion())}
	if am, ok := client.Conn.(ssh.AlgorithmsConnMetadata); ok {
		fields["job_cipher"] = am.Algorithms().Read.Cipher
	}
	if s.certID != "" {
		fields["cert_key_id"] = s.certID
	}
	s.sess.Record(record.Metadata, record.Event{Type: record.TypeNote, Reason: "ssh login", Fields: fields})
	p.Log.Info("ssh session", "client_user", s.clientUser, "user", p.Injection.User, "credential", p.Injection.Name, "host_key", s.hostKey, "cert_key_id", s.certID, "job_cipher", fields["job_cipher"])

	stop := context.AfterFunc(ctx, func() { client.Close(); up.conn.Close() })
	defer stop()

	// Either side's end ends the session.
	done := make(chan struct{}, 2)
	go func() {
		s.upstreamLoop(up.chans, up.reqs)
		done <- struct{}{}
	}()
	go func() {
		s.clientLoop(chans, reqs)
		done <- struct{}{}
	}()
	<-done
	client.Close()
	up.conn.Close()
	<-done
	s.wg.Wait()
	return nil
}

// clientLoop serves the job's channels and global requests.
func (s *session) clientLoop(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	s.serveLoop(chans, reqs, func(nc ssh.NewChannel) {
		s.channels.Add(1)
		s.clientChannel(nc)
	}, s.clientGlobal, fmt.Sprintf("sluice: at most %d channels may be open at once in one session", maxChannels))
}

// upstreamLoop serves what the host opens or asks: channels back for
// allowed forwards, agent and X11; global requests are answered, never
// passed to the job (hostkeys-00@openssh.com would teach the job's client
// the host's real keys).
func (s *session) upstreamLoop(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	s.serveLoop(chans, reqs, s.upstreamChannel, func(r *ssh.Request) {
		if r.WantReply {
			r.Reply(false, nil)
		}
	}, "too many channels")
}

// serveLoop serves one side's new channels, each on a goroutine of its
// own within maxChannels (past it, refused with busy), and its global
// requests in order, until the side's connection ends.
func (s *session) serveLoop(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, channel func(ssh.NewChannel), global func(*ssh.Request), busy string) {
	for {
		select {
		case nc, ok := <-chans:
			if !ok {
				return
			}
			if !s.openChannel() {
				nc.Reject(ssh.ResourceShortage, busy)
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.closeChannel()
				channel(nc)
			}()
		case r, ok := <-reqs:
			if !ok {
				reqs = nil // a nil channel is never ready: channels go on
				continue
			}
			global(r)
		}
	}
}

// clientChannel dispatches a channel the job opens.
func (s *session) clientChannel(nc ssh.NewChannel) {
	switch nc.ChannelType() {
	case "session":
		s.mu.Lock()
		no := s.noMoreSessions
		s.mu.Unlock()
		if no {
			nc.Reject(ssh.Prohibited, "no-more-sessions was requested")
			return
		}
		s.serveSession(nc)
	case "direct-tcpip":
		var m struct {
			Host     string
			Port     uint32
			OrigHost string
			OrigPort uint32
		}
		if err := ssh.Unmarshal(nc.ExtraData(), &m); err != nil {
			nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
			return
		}
		s.directForward(nc, m.Host, int(m.Port))
	case "direct-streamlocal@openssh.com":
		var m struct {
			Path     string
			Reserved string
			Res2     uint32
		}
		if err := ssh.Unmarshal(nc.ExtraData(), &m); err != nil {
			nc.Reject(ssh.ConnectionFailed, "malformed direct-streamlocal request")
			return
		}
		s.directForward(nc, m.Path, 0)
	default:
		nc.Reject(ssh.UnknownChannelType, "sluice: unknown channel type "+strconv.Quote(nc.ChannelType()))
	}
}

// directForward decides a forward the job asks the host to connect (ssh
// -L, -D, -W, ProxyJump) and, allowed, relays it.
func (s *session) directForward(nc ssh.NewChannel, host string, port int) {
	target := net.JoinHostPort(host, strconv.Itoa(port))
	if port == 0 {
		target = host
	}
	num := s.allocChannel()
	c := s.command(ruleset.SSHDirectTCPIP, "direct-tcpip "+target, reqInfo{unmaskable: "a forward's bytes", channel: num}, func(r *ruleset.SSHRequest) {
		r.ForwardHost, r.ForwardPort = host, port
	})
	if !s.allowed(c, nil) {
		nc.Reject(ssh.Prohibited, refusal(c))
		return
	}
	start := time.Now()
	n, ok := s.bridge(nc, num, s.up.OpenChannel, true)
	o := enforcer.Outcome{Bytes: n, Duration: time.Since(start), Fields: map[string]string{"channel": num}}
	if !ok {
		o.ErrCode = "open failed"
	}
	s.sess.Done(&c.Cmd, c.Verdict, o)
}

// bridge opens nc's twin on the other side with open, accepts nc, and
// relays the two until both directions end. fromJob says nc is the job's
// (its twin the host's). It returns the bytes sent to the job, and false
// when the twin could not be opened: nc is then refused with the other
// side's reason.
func (s *session) bridge(nc ssh.NewChannel, num string, open func(string, []byte) (ssh.Channel, <-chan *ssh.Request, error), fromJob bool) (int64, bool) {
	twin, twinReqs, err := open(nc.ChannelType(), nc.ExtraData())
	if err != nil {
		if oe, ok := err.(*ssh.OpenChannelError); ok {
			nc.Reject(oe.Reason, oe.Message)
		} else {
			nc.Reject(ssh.ConnectionFailed, err.Error())
		}
		return 0, false
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		twin.Close()
		return 0, false
	}
	go ssh.DiscardRequests(twinReqs)
	go ssh.DiscardRequests(reqs)
	job, host := ch, twin
	if !fromJob {
		job, host = twin, ch
	}
	return s.pipe(job, host, streamsOf(num, "data", false)), true
}

// upstreamChannel relays a channel the host opens back, when the ruleset
// allowed what it belongs to; anything else is refused.
func (s *session) upstreamChannel(nc ssh.NewChannel) {
	s.mu.Lock()
	ok := false
	switch nc.ChannelType() {
	case "forwarded-tcpip":
		var m struct {
			Addr     string
			Port     uint32
			OrigHost string
			OrigPort uint32
		}
		if ssh.Unmarshal(nc.ExtraData(), &m) == nil {
			ok = s.forwards[net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port)))]
		}
	case "forwarded-streamlocal@openssh.com":
		var m struct {
			Path     string
			Reserved string
		}
		if ssh.Unmarshal(nc.ExtraData(), &m) == nil {
			ok = s.forwards[m.Path]
		}
	case "auth-agent@openssh.com":
		ok = s.agent
	case "x11":
		ok = s.x11
	}
	s.mu.Unlock()
	if !ok {
		nc.Reject(ssh.Prohibited, "sluice: not allowed")
		return
	}
	s.bridge(nc, s.allocChannel(), s.client.OpenChannel, false)
}

// clientGlobal answers the job's global requests: remote forwards are
// decided, keepalives answered, the rest refused.
func (s *session) clientGlobal(r *ssh.Request) {
	switch r.Type {
	case "tcpip-forward", "cancel-tcpip-forward":
		var m struct {
			Addr string
			Port uint32
		}
		if err := ssh.Unmarshal(r.Payload, &m); err != nil {
			r.Reply(false, nil)
			return
		}
		s.remoteForward(r, m.Addr, int(m.Port), net.JoinHostPort(m.Addr, strconv.Itoa(int(m.Port))))
	case "streamlocal-forward@openssh.com", "cancel-streamlocal-forward@openssh.com":
		var m struct{ Path string }
		if err := ssh.Unmarshal(r.Payload, &m); err != nil {
			r.Reply(false, nil)
			return
		}
		s.remoteForward(r, m.Path, 0, m.Path)
	case "no-more-sessions@openssh.com":
		s.mu.Lock()
		s.noMoreSessions = true
		s.mu.Unlock()
	default:
		// keepalive@openssh.com and anything unknown: a failure reply
		// is what OpenSSH's sshd gives, and what keepalives expect.
		if r.WantReply {
			r.Reply(false, nil)
		}
	}
}

// remoteForward decides a request that the host listen for the job (ssh
// -R), and passes an allowed one on.
func (s *session) remoteForward(r *ssh.Request, host string, port int, key string) {
	cancel := r.Type == "cancel-tcpip-forward" || r.Type == "cancel-streamlocal-forward@openssh.com"
	if cancel {
		s.mu.Lock()
		had := s.forwards[key]
		s.mu.Unlock()
		if !had {
			r.Reply(false, nil)
			return
		}
		ok, payload, err := s.up.SendRequest(r.Type, true, r.Payload)
		if err == nil && ok {
			s.mu.Lock()
			delete(s.forwards, key)
			s.mu.Unlock()
		}
		r.Reply(err == nil && ok, payload)
		return
	}
	c := s.command(ruleset.SSHTCPIPForward, "tcpip-forward "+key, reqInfo{unmaskable: "a forward's bytes"}, func(q *ruleset.SSHRequest) {
		q.ForwardHost, q.ForwardPort = host, port
	})
	if !s.allowed(c, nil) {
		// A global request's failure carries no message: the refusal is
		// in the log and the recording.
		r.Reply(false, nil)
		return
	}
	ok, payload, err := s.up.SendRequest(r.Type, true, r.Payload)
	if err != nil || !ok {
		r.Reply(false, nil)
		return
	}
	if port == 0 && r.Type == "tcpip-forward" && len(payload) >= 4 {
		// The host chose the port: its channels name that one.
		var m struct{ Port uint32 }
		if ssh.Unmarshal(payload, &m) == nil {
			key = net.JoinHostPort(host, strconv.Itoa(int(m.Port)))
		}
	}
	s.mu.Lock()
	if s.forwards == nil {
		s.forwards = map[string]bool{}
	}
	if len(s.forwards) < maxForwards {
		s.forwards[key] = true
	}
	s.mu.Unlock()
	r.Reply(true, payload)
}

// jobCiphers are the ciphers offered to a job whose client has no GCM
// (pickJobCiphers): x/crypto/ssh's, less
// chacha20-poly1305, which OpenSSH's client prefers and x/crypto runs
// without assembly on amd64 (a third of the proxy's CPU in an scp through
// it). OpenSSH then takes aes128-ctr (with an encrypt-then-MAC HMAC), and
// clients that prefer GCM get it; every SSH client has one of the two.
// Measured with bench/suite.sh ONLY=ssh-scp ROUNDS=1: 0.57x direct with
// chacha20-poly1305, 0.65x with aes128-ctr.
var jobCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes192-ctr", "aes256-ctr"}

// maxChannels bounds the channels open at once in one session, both ways:
// each holds goroutines and buffers.
const maxChannels = 64

// openChannel counts a channel in, unless maxChannels are open.
func (s *session) openChannel() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open >= maxChannels {
		return false
	}
	s.open++
	return true
}

func (s *session) closeChannel() {
	s.mu.Lock()
	s.open--
	s.mu.Unlock()
}

// maxForwards bounds the remote forwards one session keeps.
const maxForwards = 64

// reqInfo says what a request's recording and decision need beyond what
// rules see: the channel it belongs to, and why its data cannot be
// masked (a mask verdict is then a deny).
type reqInfo struct {
	channel, unmaskable string
}

// command builds and decides one request of the session.
func (s *session) command(kind, text string, o reqInfo, fill func(*ruleset.SSHRequest)) *decoder.Command {
	r := &ruleset.SSHRequest{User: s.clientUser, Kind: kind}
	if fill != nil {
		fill(r)
	}
	stKind := kind
	if r.SFTPOp != "" {
		stKind = ruleset.KindSFTP
	}
	c := &decoder.Command{Cmd: enforcer.Command{Text: text, Statement: ruleset.Statement{Kind: stKind, Text: text, SSH: r},
		Unmaskable: o.unmaskable}}
	if o.channel != "" {
		c.Cmd.Fields = map[string]string{"channel": o.channel}
	}
	s.decider.Decide(c)
	return c
}

// allowed waits on a hold, then reports whether c may go on. notify tells
// the job of the hold (nil: it is not told). A mask verdict on a request
// whose data the decoder cannot mask is refused by the caller.
func (s *session) allowed(c *decoder.Command, notify decoder.Notify) bool {
	s.decider.AwaitHold(s.ctx, c, notify)
	return !c.Blocked()
}

// refusal is the sentence a refused request is answered with.
func refusal(c *decoder.Command) string { return c.Refusal(c.Cmd.Text) }

// streams are the recording fields of one channel's streams.
type streams struct {
	channel               string
	stdin, stdout, stderr map[string]string
}

// allocChannel numbers a channel for the recording: 0, 1, ... in the
// order the session opened them.
func (s *session) allocChannel() string {
	s.mu.Lock()
	n := s.nextChan
	s.nextChan++
	s.mu.Unlock()
	return strconv.FormatUint(uint64(n), 10)
}

// streamsOf names channel ch's streams for the recording: stdin, stdout
// and stderr, or tty both ways when it has a terminal ("data" both ways
// for a forward).
func streamsOf(ch, kind string, pty bool) *streams {
	st := &streams{channel: ch}
	mk := func(name string) map[string]string { return map[string]string{"channel": ch, "stream": name} }
	switch {
	case kind == "data":
		st.stdin, st.stdout = mk("data"), mk("data")
		st.stderr = st.stdout
	case pty:
		st.stdin, st.stdout = mk("tty"), mk("tty")
		st.stderr = st.stdout
	default:
		st.stdin, st.stdout, st.stderr = mk("stdin"), mk("stdout"), mk("stderr")
	}
	return st
}

// pipe relays a forward's bytes both ways until both directions end, and
// returns the bytes sent to the job.
func (s *session) pipe(ch, uch ssh.Channel, st *streams) int64 {
	var wg sync.WaitGroup
	var toJob int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.copyRecorded(uch, ch, record.DirClientToServer, st.stdin)
		uch.CloseWrite()
	}()
	toJob, _ = s.copyRecorded(ch, uch, record.DirServerToClient, st.stdout)
	ch.CloseWrite()
	wg.Wait()
	ch.Close()
	uch.Close()
	return toJob
}

// copyRecorded copies src to dst, recording each chunk as one stream.
func (s *session) copyRecorded(dst io.Writer, src io.Reader, dir string, fields map[string]string) (int64, error) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if rerr := s.sess.WireStream(dir, fields, buf[:k]); rerr != nil {
				return n, rerr
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return n, werr
			}
			n += int64(k)
		}
		if err != nil {
			if err == io.EOF {
				return n, nil
			}
			return n, err
		}
	}
}
