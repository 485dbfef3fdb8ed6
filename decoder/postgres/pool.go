package postgres

// Server connections kept for reuse (a target's upstream_pool). Only a
// session whose login Sluice made itself, with an injected credential,
// takes part: the job never authenticates to the server, so a server
// connection Sluice logged in can serve the same job's next session
// without a new login, as PgBouncer's session pooling does.
//
// What a connection may be reused for is its key: a keyed hash of the
// flow's scope (target and its upstream settings, destination, the CI
// job with its verified claims and cgroup), the credential's name, user and secret,
// and the StartupMessage as sent to the server. So a connection never
// crosses jobs, credentials (a rotated secret is a new key) or startup
// parameters, and a session on a reused connection starts from the same
// server-side settings a new login would give it.
//
// A session gives its connection back only when it ends with Terminate
// while idle: transaction status idle, no answer owed, nothing unread.
// The connection is then reset with DISCARD ALL (prepared statements,
// portals, temporary tables, LISTEN, advisory locks, sequences' state,
// every setting, SET ROLE and SET SESSION AUTHORIZATION); only a reset
// that ends in ReadyForQuery, idle, with nothing else said, puts it in
// the pool. Anything else closes it. A pooled connection is dropped after
// poolIdle unused, is not reused poolLifetime after its login (so a role
// whose login the server revoked stops being served soon), and is checked
// for a closed or talking server before reuse.
//
// The client of a reused connection gets what a login would have sent:
// AuthenticationOk, the server's current ParameterStatus values (kept as
// the server reported them, at login, during sessions and at the reset),
// a BackendKeyData and ReadyForQuery. Every client of a pooled target gets
// a cancel key of Sluice's own, mapped to the server's, so a client's key
// cancels nothing once its session ended, whoever uses the connection
// next.

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/internal/rawio"
)

const (
	// poolIdle is how long a pooled connection waits for a session.
	poolIdle = 30 * time.Second
	// poolLifetime is how long after its login a connection may still be
	// reused.
	poolLifetime = 5 * time.Minute
	// poolMaxIdle bounds the idle connections of every key together.
	poolMaxIdle = 1024
	// resetTimeout bounds the reset of a connection given back.
	resetTimeout = 5 * time.Second
	// poolWait is how long a session waits for a connection of its key
	// that is being reset, before it logs in anew.
	poolWait = 100 * time.Millisecond
	// Bounds of the parameters kept for a pooled connection.
	maxPoolParams     = 64
	maxPoolParamBytes = 16 << 10
)

// PoolKey names what a pooled connection may serve.
type PoolKey [sha256.Size]byte

// Pool keeps idle server connections of pooled targets. It is safe for
// concurrent use; one serves every session of the daemon.
type Pool struct {
	seed []byte

	// tls remembers, per flow scope of a target with upstream_tls
	// prefer, whether its last login found TLS; cleared when full.
	tlsMu sync.Mutex
	tls   map[string]bool

	mu       sync.Mutex
	keys     map[PoolKey]*poolKeyed
	n        int // idle connections, every key
	max      int
	idleFor  time.Duration
	lifetime time.Duration
	wait     time.Duration
}

// poolKeyed is one key's part of the pool: its idle connections, and how
// many are being reset (wake is closed when one of those is done). It is
// dropped when both are none.
type poolKeyed struct {
	idle      []*serverConn
	resetting int
	wake      chan struct{}
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	seed := make([]byte, 32)
	rand.Read(seed)
	return &Pool{seed: seed, tls: map[string]bool{}, keys: map[PoolKey]*poolKeyed{}, max: poolMaxIdle, idleFor: poolIdle, lifetime: poolLifetime, wait: poolWait}
}

// maxTLSSeen bounds the scopes whose TLS outcome the pool remembers.
const maxTLSSeen = 1024

// tlsSeen reports whether the last login of scope found TLS, if one was
// seen.
func (p *Pool) tlsSeen(scope string) (tlsUp, seen bool) {
	p.tlsMu.Lock()
	defer p.tlsMu.Unlock()
	tlsUp, seen = p.tls[scope]
	return tlsUp, seen
}

// sawTLS remembers whether a login of scope found TLS.
func (p *Pool) sawTLS(scope string, tlsUp bool) {
	p.tlsMu.Lock()
	defer p.tlsMu.Unlock()
	if _, ok := p.tls[scope]; !ok && len(p.tls) >= maxTLSSeen {
		clear(p.tls)
	}
	p.tls[scope] = tlsUp
}

// Idle is how many connections wait in the pool.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// key hashes what a connection may serve; parts are length-prefixed so
// no two lists of parts hash alike.
func (p *Pool) key(parts ...[]byte) PoolKey {
	h := hmac.New(sha256.New, p.seed)
	for _, b := range parts {
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(b)))
		h.Write(l[:])
		h.Write(b)
	}
	var k PoolKey
	h.Sum(k[:0])
	return k
}

// keyFor is the key of a session: the flow's scope, the credential's
// name, user and secret, and the StartupMessage as sent upstream (its
// protocol version and its parameters in sorted order).
func (p *Pool) keyFor(scope, name, user string, secret []byte, sm *pgproto3.StartupMessage) PoolKey {
	names := make([]string, 0, len(sm.Parameters))
	for k := range sm.Parameters {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := [][]byte{[]byte(scope), []byte(name), []byte(user), secret, binary.BigEndian.AppendUint32(nil, sm.ProtocolVersion)}
	for _, k := range names {
		parts = append(parts, []byte(k), []byte(sm.Parameters[k]))
	}
	return p.key(parts...)
}

// PoolScope is the part of a pool key that comes from the flow: its
// target with the settings of the server hop, its destination, and the
// job (the CI job the identity resolver found, its verified claims and
// its cgroup). A flow without a pooled target gets "".
func PoolScope(f *decoder.Flow, up decoder.UpstreamSettings) string {
	t := f.Target
	if t == nil || t.UpstreamPool <= 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "target=%q tls=%q ca=%q attempt=%t required=%t dest=%s level=%q job=%q cgroup=%q",
		t.Name, t.UpstreamTLS, t.UpstreamCA, up.Attempt, up.Required, f.Dest, f.Facts.Identity.Level, f.Identity.Job, f.Facts.Process.Cgroup)
	if up.Config != nil {
		fmt.Fprintf(&b, " server_name=%q insecure=%t", up.Config.ServerName, up.Config.InsecureSkipVerify)
	}
	claims := make([]string, 0, len(f.Facts.Identity.Claims))
	for k := range f.Facts.Identity.Claims {
		claims = append(claims, k)
	}
	sort.Strings(claims)
	for _, k := range claims {
		fmt.Fprintf(&b, " %q=%q", k, f.Facts.Identity.Claims[k])
	}
	return b.String()
}

// param is one ParameterStatus as the server reported it.
type param struct{ name, value string }

// serverConn is a server connection logged in by Sluice.
type serverConn struct {
	key PoolKey
	// conn is the connection: the socket itself (plain) or TLS over it.
	conn  net.Conn
	plain bool
	tls   bool
	// params are the server's ParameterStatus values, in the order first
	// reported; backend its BackendKeyData body.
	params  []param
	backend []byte
	born    time.Time
	timer   *time.Timer
}

// take returns a pooled connection for k that is still fit to serve (a
// TLS one when needTLS), or nil. A connection of k being reset is waited
// for, up to p.wait: a client that opens a connection per transaction
// comes back before the reset of its last one is done.
func (p *Pool) take(k PoolKey, needTLS bool) *serverConn {
	deadline := time.Now().Add(p.wait)
	for {
		p.mu.Lock()
		e := p.keys[k]
		if e == nil {
			p.mu.Unlock()
			return nil
		}
		if len(e.idle) == 0 {
			wake := e.wake
			p.mu.Unlock()
			left := time.Until(deadline)
			if left <= 0 {
				return nil
			}
			t := time.NewTimer(left)
			select {
			case <-wake:
				t.Stop()
				continue
			case <-t.C:
				return nil
			}
		}
		sc := e.idle[len(e.idle)-1]
		e.idle[len(e.idle)-1] = nil
		e.idle = e.idle[:len(e.idle)-1]
		p.drop(k, e)
		p.n--
		p.mu.Unlock()
		sc.timer.Stop() // an expiry already running finds it gone
		if time.Since(sc.born) < p.lifetime && (sc.tls || !needTLS) && sc.quiet() {
			return sc
		}
		sc.conn.Close()
	}
}

// drop forgets k's entry when nothing is left in it. p.mu is held.
func (p *Pool) drop(k PoolKey, e *poolKeyed) {
	if len(e.idle) == 0 && e.resetting == 0 {
		delete(p.keys, k)
	}
}

// quiet reports whether the server has neither closed the connection nor
// said anything (an idle-session timeout's FATAL, a shutdown) while it
// waited in the pool: the socket has nothing to read, looked at without
// reading.
func (sc *serverConn) quiet() bool {
	sock := socketOf(sc.conn)
	if sock == nil {
		return false
	}
	rc, err := sock.SyscallConn()
	if err != nil {
		return false
	}
	quiet := false
	rc.Control(func(fd uintptr) {
		var b [1]byte
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		quiet = err == unix.EAGAIN
	})
	return quiet
}

// socketOf is the socket under c (TLS, the raw-syscall wrapper), or nil.
func socketOf(c net.Conn) syscall.Conn {
	for {
		switch x := c.(type) {
		case *tls.Conn:
			c = x.NetConn()
		case *rawio.Conn:
			c = x.Conn
		case syscall.Conn:
			return x
		default:
			return nil
		}
	}
}

// release resets sc and pools it, up to size idle connections for its
// key; in the background, since the session that gave it back is over.
func (p *Pool) release(sc *serverConn, size int, log hclog.Logger) {
	p.mu.Lock()
	e := p.keys[sc.key]
	if e == nil {
		e = &poolKeyed{}
		p.keys[sc.key] = e
	}
	if e.resetting == 0 {
		e.wake = make(chan struct{})
	}
	e.resetting++
	p.mu.Unlock()
	go func() {
		err := sc.reset()
		if err != nil {
			sc.conn.Close()
		}
		if p.put(sc, size, err == nil) {
			log.Info("server connection pooled", "login_age", time.Since(sc.born).Round(time.Millisecond).String())
		} else if err != nil {
			log.Warn("server connection closed, not pooled: its reset failed", "error", err)
		}
	}()
}

// put ends sc's reset: it joins the idle connections of its key when the
// reset succeeded (ok) and there is room, else it is closed. Sessions
// waiting for the key are woken. It reports whether sc was pooled.
func (p *Pool) put(sc *serverConn, size int, ok bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.keys[sc.key]
	e.resetting--
	if e.resetting == 0 {
		close(e.wake)
	}
	if !ok || p.n >= p.max || len(e.idle) >= size || time.Since(sc.born) >= p.lifetime {
		if ok {
			sc.conn.Close()
		}
		p.drop(sc.key, e)
		return false
	}
	e.idle = append(e.idle, sc)
	p.n++
	sc.timer = time.AfterFunc(p.idleFor, func() { p.expire(sc) })
	return true
}

// expire closes sc if it still waits in the pool.
func (p *Pool) expire(sc *serverConn) {
	p.mu.Lock()
	e := p.keys[sc.key]
	i := -1
	if e != nil {
		for j, c := range e.idle {
			if c == sc {
				i = j
				break
			}
		}
	}
	if i < 0 {
		p.mu.Unlock()
		return
	}
	e.idle = append(e.idle[:i], e.idle[i+1:]...)
	p.drop(sc.key, e)
	p.n--
	p.mu.Unlock()
	sc.conn.Close()
}

// discardAll is the reset: a simple Query of DISCARD ALL.
var discardAll = func() []byte {
	q := "DISCARD ALL\x00"
	b := []byte{'Q', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(q)+4))
	return append(b, q...)
}()

// reset runs DISCARD ALL on the connection and checks that the server
// answers exactly that, ending idle with nothing after it; the
// ParameterStatus values it reports are kept.
func (sc *serverConn) reset() error {
	c := sc.conn
	c.SetDeadline(time.Now().Add(resetTimeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(discardAll); err != nil {
		return err
	}
	fr := &frameReader{r: bufio.NewReaderSize(c, 4096), max: 64 << 10}
	done := false
	for {
		typ, n, err := fr.next()
		if err != nil {
			return err
		}
		b, err := fr.body(n)
		if err != nil {
			return err
		}
		switch typ {
		case 'S':
			var ok bool
			if sc.params, ok = setParam(sc.params, b); !ok {
				return errors.New("too many parameters")
			}
		case 'N', 'A':
			// A notice, or a notification sent before UNLISTEN.
		case 'C':
			if done || !bytes.Equal(b, []byte("DISCARD ALL\x00")) {
				return fmt.Errorf("the reset was answered %q", b)
			}
			done = true
		case 'E':
			return fmt.Errorf("the reset failed: %s", messageOf(b))
		case 'Z':
			switch {
			case len(b) != 1 || b[0] != 'I':
				return fmt.Errorf("the reset ended with status %q", b)
			case !done:
				return errors.New("the reset ended without its completion")
			case fr.r.Buffered() > 0:
				return errors.New("the server sent more after the reset")
			}
			return nil
		default:
			return fmt.Errorf("the reset was answered with message %q", typ)
		}
	}
}

// setParam keeps a ParameterStatus body (name and value, each
// NUL-terminated) in ps: a new value for a known name, else a new name.
// It reports false past the bounds.
func setParam(ps []param, b []byte) ([]param, bool) {
	name, rest, err := cstring(b)
	if err != nil {
		return ps, false
	}
	value, _, err := cstring(rest)
	if err != nil {
		return ps, false
	}
	for i := range ps {
		if ps[i].name == name {
			ps[i].value = value
			return ps, true
		}
	}
	size := len(name) + len(value)
	for _, p := range ps {
		size += len(p.name) + len(p.value)
	}
	if len(ps) >= maxPoolParams || size > maxPoolParamBytes {
		return ps, false
	}
	return append(ps, param{name, value}), true
}

// unwrapConn is the connection a pooled serverConn keeps: the socket
// under the decoders' raw-syscall wrapper, or the TLS connection.
func unwrapConn(c net.Conn) net.Conn {
	if rc, ok := c.(*rawio.Conn); ok {
		return rc.Conn
	}
	return c
}
