package postgres

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/internal/rawio"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// Startup-phase request codes.
const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
)

// UpstreamTLS says how to secure the proxy's own connection to the server:
// attempt sends an SSLRequest with cfg; required ends the session when the
// server declines.
type UpstreamTLS = decoder.UpstreamSettings

// Params are one session's parts, supplied by the interceptor.
type Params struct {
	Client net.Conn
	// Dial reaches the original destination (a fresh connection each call;
	// cancel requests use it too).
	Dial func(context.Context) (net.Conn, error)
	// Session decides statements and takes events.
	Session *enforcer.Session
	// Classify classifies statement text; normally a shared Cache.
	Classify func(string) (ruleset.Statement, error)
	// Upstream is the target's TLS mode, applied to the proxy's hop.
	Upstream UpstreamTLS
	// ClientTLS terminates TLS from clients that ask for it, with a
	// certificate from the daemon's CA. Nil declines every SSLRequest.
	ClientTLS *tls.Config
	// Cancels is the registry shared by every session of the daemon.
	Cancels *Cancels
	// Masks builds maskers for the mask rules a statement's verdict
	// carries (each session names result columns with a catalog of its
	// own, catalog.go). A statement whose verdict masks is denied when
	// Masks is nil.
	Masks *mask.Cache
	// MaxMessage bounds every message from either side; 0 means
	// DefaultMaxMessage.
	MaxMessage int
	Log        hclog.Logger
	// Pool keeps server connections for reuse (pool.go), up to PoolSize
	// idle ones per key, for sessions with an injected credential; the
	// flow's part of the key is PoolScope. A nil Pool or a PoolSize of 0
	// keeps none.
	Pool      *Pool
	PoolSize  int
	PoolScope string
}

// Stats are a session's totals, for the flow log.
type Stats struct {
	decoder.SessionStats
}

// Serve runs one client session: startup (TLS negotiation on both hops,
// cancel requests), authentication relayed between client and server, then
// the statement relay until either side ends. It owns p.Client and closes
// it. Denials and protocol errors reach the client as PostgreSQL
// ErrorResponses.
func Serve(ctx context.Context, p Params) (Stats, error) {
	if p.MaxMessage <= 0 {
		p.MaxMessage = DefaultMaxMessage
	}
	if p.Log == nil {
		p.Log = hclog.NewNullLogger()
	}
	s := &session{p: p, client: decoder.CountConn{Conn: rawio.Wrap(p.Client)}, rawClient: p.Client}
	s.tap.Session = p.Session
	defer s.freeBuffers() // after close
	defer s.close()
	err := s.run(ctx)
	n := s.counts()
	st := Stats{decoder.SessionStats{
		BytesFromClient: n.ClientToServer, BytesToClient: n.ServerToClient,
		User: s.user, Database: s.database, ClientTLS: s.clientTLS, UpstreamTLS: s.upstreamTLS,
		ClientUser: s.clientUser, Credential: s.credential, RelayCore: s.relayCore, UpstreamPool: s.poolNote(),
	}}
	return st, err
}

// session is one client connection's state.
type session struct {
	p      Params
	client decoder.CountConn // the client's bytes as they cross the network
	cconn  net.Conn          // the client side after TLS, if any
	up     net.Conn

	user, database         string
	clientUser, credential string // the user the client asked for and the credential injected in its place
	clientTLS, upstreamTLS bool
	cancelKey              string
	cancelPacket           []byte // a CancelRequest for this session's backend
	catalog                *Catalog
	ctx                    context.Context
	nonce                  string
	tap                    decoder.WireTap // records the client hop from the end of the login (openTap)
	conns                  decoder.Conns   // both hops, closed by close from any goroutine
	// keyMu guards cancelKey and keyDone against close, which runs on the
	// context's AfterFunc goroutine while the session goroutine may still
	// be registering the key.
	keyMu   sync.Mutex
	keyDone bool // close has run: a key found later is not registered

	// rawClient and rawUp are the two sockets as dialed and accepted, for
	// the relay core (core.go); rawUp is nil when the server hop is not a
	// plain socket. coreCounts counts the client's bytes while the
	// session ran on the core, later its connection after it left.
	rawClient, rawUp net.Conn
	tapped           bool   // cconn is &client, tapped (record = "full")
	relayCore        string // where the statement phase ran (Stats.RelayCore)
	coreCounts       decoder.Counts
	later            *decoder.CountConn

	// Pooling (pool.go): the session's server connection may come from
	// the pool and go back to it. params and backend are the server's
	// ParameterStatus values and BackendKeyData, born the time of its
	// login; reused says it came from the pool, released that it went
	// back (to be reset), kept why it did not.
	pooling  bool
	poolKey  PoolKey
	params   []param
	backend  []byte
	born     time.Time
	reused   bool
	released bool
	kept     string

	// readers and writers are the session's buffers, from the pools
	// (frameReader, writer), given back when Serve ends.
	readers []*bufio.Reader
	writers []*bufio.Writer
}

// The statement relay's buffers (bufSize each, four a session) come from
// pools and go back when Serve returns, when every goroutine of the
// session has ended (relay.run waits for its server side; a hold's notice
// is written before the hold waits): a connection per transaction would
// otherwise allocate 256 KiB each time, and the garbage collector would
// run for it.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, bufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, bufSize) }}
)

// frameReader returns a frame reader of r with a pooled buffer.
func (s *session) frameReader(r io.Reader) *frameReader {
	b := readerPool.Get().(*bufio.Reader)
	b.Reset(r)
	s.readers = append(s.readers, b)
	return &frameReader{r: b, max: s.p.MaxMessage}
}

// writer returns a buffered writer to w with a pooled buffer.
func (s *session) writer(w io.Writer) *bufio.Writer {
	b := writerPool.Get().(*bufio.Writer)
	b.Reset(w)
	s.writers = append(s.writers, b)
	return b
}

// freeBuffers gives the session's buffers back to their pools.
func (s *session) freeBuffers() {
	for _, b := range s.readers {
		b.Reset(nil)
		readerPool.Put(b)
	}
	for _, b := range s.writers {
		b.Reset(nil)
		writerPool.Put(b)
	}
	s.readers, s.writers = nil, nil
}

// poolNote is the flow log's upstream_pool: how the session's server
// connection was got and left, on pooled targets.
func (s *session) poolNote() string {
	if !s.pooling {
		return ""
	}
	got := "new"
	if s.reused {
		got = "reused"
	}
	switch {
	case s.released:
		return got + ", released"
	case s.kept != "":
		return got + ", closed: " + s.kept
	}
	return got + ", closed"
}

// noPool says the session's server connection must not be pooled, and
// why (the first reason stays).
func (s *session) noPool(why string) {
	if s.kept == "" {
		s.kept = why
	}
}

// counts are the client's bytes, as they crossed the network, over the
// session's life.
func (s *session) counts() decoder.Counts {
	c := decoder.ClientCounts{Before: &s.client, Core: s.coreCounts, After: s.later}
	return c.Counts()
}

// setCconn and setUp change what close acts on (decoder.Conns): a
// connection set after close ran (the context ended while the session was
// still starting) is closed at once, so it cannot outlive the session.
func (s *session) setCconn(c net.Conn) { s.cconn = s.conns.Client(c) }
func (s *session) setUp(c net.Conn)    { s.up = s.conns.Server(c) }

// registerCancelKey registers the session's cancel key for cancel
// requests, for close to forget; not once the session closed, since
// nothing would remove it then.
func (s *session) registerCancelKey(k string) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	if s.keyDone || s.p.Cancels == nil {
		return
	}
	s.cancelKey = k
	s.p.Cancels.add(k, s.p.Dial, s.cancelPacket)
}

// close ends the session's connections and forgets its cancel key. It is
// safe to call from any goroutine, more than once.
func (s *session) close() {
	s.keyMu.Lock()
	key := s.cancelKey
	s.cancelKey, s.keyDone = "", true
	s.keyMu.Unlock()
	if key != "" && s.p.Cancels != nil {
		s.p.Cancels.remove(key)
	}
	s.conns.Close()
	s.client.Close()
}

func (s *session) run(ctx context.Context) error {
	s.ctx = ctx
	stop := context.AfterFunc(ctx, s.close)
	defer stop()

	var nonce [8]byte
	rand.Read(nonce[:])
	s.nonce = hex.EncodeToString(nonce[:])
	s.setCconn(&s.client)

	// 1. Startup: SSL and GSS negotiation, cancel requests, then the
	// StartupMessage.
	startup, err := s.negotiate(ctx)
	if err != nil || startup == nil {
		return err
	}
	if s.p.Session.WantsWire() {
		// The recording starts with the StartupMessage, so an export
		// decodes from the start. The authentication exchange is not
		// recorded (a cleartext or MD5 password message, SCRAM proofs):
		// the tap opens at the server's verdict on it (see openTap).
		pkt := binary.BigEndian.AppendUint32(nil, uint32(len(startup)+4))
		if err := s.p.Session.Wire("c2s", append(pkt, startup...)); err != nil {
			s.refuse(codeConnectionFailure, "sluice: the session cannot be recorded")
			return err
		}
		// What the client sent, and what it received after masking.
		s.setCconn(decoder.Tapped(s.cconn, s.tap.Tap))
		s.tapped = true
	}

	// 2. How the session authenticates: with the client's own credentials,
	// or with one the ruleset grants this job (see inject.go).
	inj, err := s.injection()
	if err != nil {
		return err
	}
	var secret []byte
	var sc *serverConn // a pooled server connection serving the session
	if inj != nil {
		var sm *pgproto3.StartupMessage
		if startup, sm, err = rewriteStartup(startup, inj.User); err != nil {
			return err
		}
		s.clientUser, s.user, s.credential = s.user, inj.User, inj.Name
		var wipe func()
		if secret, wipe, err = s.fetchSecret(ctx, inj); err != nil {
			return err
		}
		defer wipe()
		if s.p.Pool != nil && s.p.PoolSize > 0 && s.p.PoolScope != "" {
			s.pooling = true
			s.poolKey = s.p.Pool.keyFor(s.p.PoolScope, inj.Name, inj.User, secret, sm)
			if s.up == nil {
				sc = s.p.Pool.take(s.poolKey, s.clientTLS)
			}
		}
	}

	// 3. The server connection: from the pool (pool.go), or connected
	// now (if negotiation did not already).
	if sc != nil {
		s.reused = true
		if sc.plain {
			s.rawUp = sc.conn
			s.setUp(rawio.Wrap(sc.conn))
		} else {
			s.setUp(sc.conn)
		}
		s.upstreamTLS, s.params, s.born = sc.tls, sc.params, sc.born
	} else {
		if err := s.connectUpstream(ctx); err != nil {
			s.refuse(codeConnectionFailure, "sluice: cannot reach the database: "+err.Error())
			return err
		}
		s.born = time.Now()
		if s.pooling && s.p.Upstream.Attempt && !s.p.Upstream.Required {
			s.p.Pool.sawTLS(s.p.PoolScope, s.upstreamTLS)
		}
		if s.clientTLS && !s.upstreamTLS {
			// The client was told the server offers TLS (what the last
			// login of this scope found), and it no longer does.
			s.refuse(codeConnectionFailure, "sluice: the database no longer offers TLS; connect again")
			return errors.New("the server no longer offers TLS, and the client was offered it")
		}
	}
	cw := s.writer(s.cconn)
	cr := s.frameReader(s.cconn)
	sw := s.writer(s.up)
	sr := s.frameReader(s.up)

	// 4. The login: on a pooled connection, what a login would have sent
	// the client; else the StartupMessage (as the client wrote it, or with
	// the injected user) and the authentication, relayed until the
	// server is ready, or answered by the proxy with the injected
	// credential.
	var status byte
	switch {
	case sc != nil:
		status, err = 'I', s.pooledLogin(inj, sc, cr, cw)
	default:
		var l [4]byte
		binary.BigEndian.PutUint32(l[:], uint32(len(startup)+4))
		sw.Write(l[:])
		sw.Write(startup)
		if err := sw.Flush(); err != nil {
			return fmt.Errorf("send startup: %w", err)
		}
		if inj != nil {
			status, err = s.injectAuth(inj, secret, cr, cw, sr, sw)
		} else {
			status, err = s.authenticate(cr, cw, sr, sw)
		}
	}
	if err != nil {
		return err
	}

	// 5. Statements until either side ends.
	r := &relay{s: s, cr: cr, cw: cw, sr: sr, sw: sw, status: status}
	return r.run()
}

// openTap starts recording the client hop where the authentication
// exchange ends: called before the server's AuthenticationOk (or its
// ErrorResponse) is written to the client. What the client was sent
// until then is flushed unrecorded; what the client sent that is read but
// not yet relayed is recorded first. So a recording holds the
// StartupMessage, then the server's AuthenticationOk, ParameterStatus,
// BackendKeyData and ReadyForQuery as the client got them, and never a
// password message or a SCRAM exchange. Until the relay starts only this
// goroutine uses the connection (decoder.WireTap). A recorder that fails
// ends the session, and the client is told.
func (s *session) openTap(cr *frameReader, cw *bufio.Writer) error {
	if !s.tap.Waiting() {
		return nil
	}
	if err := cw.Flush(); err != nil {
		return err
	}
	b, _ := cr.r.Peek(cr.r.Buffered())
	if err := s.tap.Open(b); err != nil {
		fatal(cw, codeConnectionFailure, "sluice: the session cannot be recorded")
		return err
	}
	return nil
}

// refuse sends a FATAL error to the client in the startup phase.
func (s *session) refuse(code, msg string) {
	w := bufio.NewWriter(s.cconn)
	fatal(w, code, msg)
}

// negotiate handles the packets that may come before the StartupMessage.
// It returns the StartupMessage body, or nil when the connection was a
// cancel request.
func (s *session) negotiate(ctx context.Context) ([]byte, error) {
	for i := 0; i < 4; i++ {
		s.cconn.SetReadDeadline(time.Now().Add(30 * time.Second))
		pkt, err := readStartup(s.cconn)
		s.cconn.SetReadDeadline(time.Time{})
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) {
				s.refuse(codeProtocolViolation, "sluice: "+pe.Error())
			}
			return nil, fmt.Errorf("read startup: %w", err)
		}
		code := binary.BigEndian.Uint32(pkt)
		switch code {
		case codeGSSENCRequest:
			// GSSAPI encryption is not relayed; clients fall back.
			if _, err := s.cconn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case codeSSLRequest:
			if err := s.negotiateTLS(ctx); err != nil {
				return nil, err
			}
		case codeCancelRequest:
			var cr pgproto3.CancelRequest
			if err := cr.Decode(pkt); err != nil {
				return nil, fmt.Errorf("decode cancel request: %w", err)
			}
			known := s.p.Cancels != nil && s.p.Cancels.forward(ctx, cancelKey(cr.ProcessID, cr.SecretKey))
			s.p.Log.Info("cancel request", "backend_pid", cr.ProcessID, "known_session", known)
			return nil, nil
		case pgproto3.ProtocolVersion30, pgproto3.ProtocolVersion32:
			var sm pgproto3.StartupMessage
			if err := sm.Decode(pkt); err != nil {
				s.refuse(codeProtocolViolation, "sluice: invalid startup message")
				return nil, fmt.Errorf("decode startup: %w", err)
			}
			s.user, s.database = sm.Parameters["user"], sm.Parameters["database"]
			if s.database == "" {
				s.database = s.user
			}
			if err := s.checkStartupParams(sm.Parameters); err != nil {
				return nil, err
			}
			return pkt, nil
		default:
			s.refuse(codeProtocolViolation, fmt.Sprintf("sluice: unsupported protocol version %d.%d", code>>16, code&0xffff))
			return nil, fmt.Errorf("unsupported startup code %d", code)
		}
	}
	s.refuse(codeProtocolViolation, "sluice: too many startup negotiation packets")
	return nil, errors.New("too many startup negotiation packets")
}

// checkStartupParams decides settings a client makes in its startup
// packet, where no statement is ever seen: a search_path given there (as
// a parameter or in options) is decided like SET search_path.
func (s *session) checkStartupParams(params map[string]string) error {
	text := ""
	if v, ok := params["search_path"]; ok {
		text = "search_path=" + v
	} else if o := params["options"]; strings.Contains(strings.ToLower(o), "search_path") {
		text = "options=" + o
	}
	if text == "" {
		return nil
	}
	c := &enforcer.Command{Text: "<startup parameter " + text + ">",
		Statement: ruleset.Statement{Kind: "set", Flags: []string{FlagSearchPath}}}
	v := s.p.Session.Decide(c)
	if v.Action == ruleset.Deny || v.Action == ruleset.Hold {
		w := bufio.NewWriter(s.cconn)
		writeMsg(w, 'E', denialWith(v, "FATAL"))
		w.Flush()
		return fmt.Errorf("startup parameter denied by rule %s", v.Decision.Rule.ID)
	}
	return nil
}

// negotiateTLS answers a client's SSLRequest the way the server would
// have: the upstream hop is negotiated first, and the client is offered
// TLS (terminated here, with the daemon CA's certificate) exactly when the
// server accepted it. A client that requires TLS therefore fails or
// succeeds as it would have directly.
func (s *session) negotiateTLS(ctx context.Context) error {
	tlsUp, known := s.upstreamTLSKnown()
	if !known {
		if err := s.connectUpstream(ctx); err != nil {
			s.cconn.Write([]byte{'N'})
			return err
		}
		tlsUp = s.upstreamTLS
	}
	// On a pooled target whose answer is known, the server connection
	// (maybe a pooled one) waits for the StartupMessage, which names its
	// key.
	if !tlsUp || s.p.ClientTLS == nil || s.clientTLS {
		_, err := s.cconn.Write([]byte{'N'})
		return err
	}
	if _, err := s.cconn.Write([]byte{'S'}); err != nil {
		return err
	}
	tc, err := decoder.ServerHandshake(ctx, s.cconn, s.p.ClientTLS)
	if err != nil {
		return err
	}
	s.setCconn(tc)
	s.clientTLS = true
	return nil
}

// upstreamTLSKnown reports, for a pooled target, whether the server hop
// will be TLS, when that is known without a server connection: never with
// upstream_tls disable, always with require and the verify modes (or the
// session fails), and with prefer as the last login of the flow's scope
// found it.
func (s *session) upstreamTLSKnown() (tlsUp, known bool) {
	if s.p.Pool == nil || s.p.PoolSize <= 0 || s.p.PoolScope == "" {
		return false, false
	}
	switch u := s.p.Upstream; {
	case !u.Attempt:
		return false, true
	case u.Required:
		return true, true
	}
	return s.p.Pool.tlsSeen(s.p.PoolScope)
}

// connectUpstream dials the server and negotiates TLS per the target's
// mode, once.
func (s *session) connectUpstream(ctx context.Context) error {
	if s.up != nil {
		return nil
	}
	up, err := s.p.Dial(ctx)
	if err != nil {
		return err
	}
	s.rawUp = up
	up = rawio.Wrap(up)
	s.setUp(up)
	u := s.p.Upstream
	if !u.Attempt {
		return nil
	}
	req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), codeSSLRequest)
	if _, err := up.Write(req); err != nil {
		return fmt.Errorf("upstream ssl request: %w", err)
	}
	var ans [1]byte
	if _, err := io.ReadFull(up, ans[:]); err != nil {
		return fmt.Errorf("upstream ssl answer: %w", err)
	}
	switch ans[0] {
	case 'S':
		tc, err := decoder.ClientHandshake(ctx, up, u.Config)
		if err != nil {
			return err
		}
		s.setUp(tc)
		s.upstreamTLS = true
	case 'N':
		if u.Required {
			return errors.New("the server does not support TLS, and the target requires it")
		}
	default:
		return fmt.Errorf("upstream answered %q to SSLRequest", ans[0])
	}
	return nil
}

// Authentication request codes that expect an answer from the client.
const (
	authOK            = 0
	authCleartext     = 3
	authMD5           = 5
	authGSS           = 7
	authGSSContinue   = 8
	authSSPI          = 9
	authSASL          = 10
	authSASLContinue  = 11
	authSASLFinal     = 12
	scramPlus         = "SCRAM-SHA-256-PLUS"
	maxAuthRoundTrips = 32
)

// authenticate relays the authentication exchange: the server's requests
// to the client and the client's answers back, until ReadyForQuery. The
// only change is removing SCRAM-SHA-256-PLUS from the server's mechanisms:
// channel binding ties SCRAM to one TLS connection, and client and server
// are on two different ones. It returns the transaction status.
//
// The server hop keeps TLS whenever the server offers it. A client on TLS
// whose SCRAM supports channel binding answers the stripped list with
// "y" (it supports binding, and believes the server does not), which a
// TLS server rightly refuses as a downgrade. That answer is not relayed:
// the client gets a FATAL (28000) naming what works instead. libpq and
// pgx with sslmode=prefer, the default, take that error as a cue to
// retry without TLS to the proxy; their SCRAM then says "n", and the
// server hop stays encrypted.
func (s *session) authenticate(cr *frameReader, cw *bufio.Writer, sr *frameReader, sw *bufio.Writer) (byte, error) {
	return s.authLoop(cw, sr, authExchange{
		request: func(code uint32, b []byte) error {
			sasl := code == authSASL
			withdrawn := false // SCRAM-SHA-256-PLUS was offered and taken out
			if sasl {
				n := len(b)
				b = stripSCRAMPlus(b)
				withdrawn = len(b) < n
			}
			if code == authOK {
				if err := s.openTap(cr, cw); err != nil {
					return err
				}
			}
			if err := writeMsg(cw, 'R', b); err != nil {
				return err
			}
			switch code {
			case authOK, authSASLFinal:
				return nil
			case authCleartext, authMD5, authGSS, authGSSContinue, authSSPI, authSASL, authSASLContinue:
			default:
				return s.upstreamErr(cw, fmt.Errorf("unsupported authentication request %d", code))
			}
			if err := cw.Flush(); err != nil {
				return err
			}
			ctyp, cn, err := cr.next()
			if err != nil {
				if withdrawn && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
					// The client gave up on the offer without a word:
					// what a client requiring channel binding does.
					s.p.Log.Warn("client ended the login when SCRAM-SHA-256-PLUS was withdrawn; a client with channel_binding=require cannot pass through the TLS-terminating proxy",
						"client_tls", s.clientTLS, "upstream_tls", s.upstreamTLS)
				}
				return s.clientErr(cw, err)
			}
			if ctyp != 'p' {
				return s.clientErr(cw, &ProtocolError{Msg: fmt.Sprintf("expected a password message, got %q", ctyp)})
			}
			// A password, an MD5 answer or a SCRAM message: read into
			// a slice of its own, sent past sw's buffer, then cleared.
			body, err := readSecret(cr, cn)
			if err != nil {
				return err
			}
			if sasl {
				// SASLInitialResponse: its gs2 header says whether the
				// client would bind the exchange to its TLS session.
				err = s.checkBinding(cr, cw, body)
			}
			if err == nil {
				err = s.sendSecret(sw, body)
			}
			clear(body)
			return err
		},
		refused: func(n int) error {
			// The server's refusal (a wrong password, no such
			// database) is recorded: it holds no secret.
			if err := s.openTap(cr, cw); err != nil {
				return err
			}
			if err := sr.forward(cw, n); err != nil {
				return err
			}
			cw.Flush()
			return errors.New("the server refused the session")
		},
	})
}

// authExchange is what differs between relaying the client's login and
// logging in with an injected credential: how each authentication request
// of the server is answered, and what the client gets when the server
// refuses the login.
type authExchange struct {
	// request answers the server's AuthenticationRequest: its code and
	// whole body (code included). It returns with the answer sent, or
	// with nothing to send (AuthenticationOk, SASLFinal).
	request func(code uint32, b []byte) error
	// refused handles the server's ErrorResponse (its n-byte body is the
	// next thing sr reads) and returns why the session ends.
	refused func(n int) error
}

// authLoop runs the login with the server, from the server's side: each
// authentication request goes to x.request (at most maxAuthRoundTrips of
// them), an ErrorResponse to x.refused, and the messages after
// AuthenticationOk are passed on (passStartup) until ReadyForQuery, whose
// transaction status it returns.
func (s *session) authLoop(cw *bufio.Writer, sr *frameReader, x authExchange) (byte, error) {
	rounds := 0
	for {
		typ, n, err := sr.next()
		if err != nil {
			return 0, s.upstreamErr(cw, err)
		}
		switch typ {
		case 'R':
			b, code, err := s.authRequest(sr, cw, n)
			if err != nil {
				return 0, err
			}
			if rounds++; rounds > maxAuthRoundTrips {
				return 0, s.upstreamErr(cw, errors.New("too many authentication round trips"))
			}
			if err := x.request(code, b); err != nil {
				return 0, err
			}
		case 'E':
			return 0, x.refused(n)
		default:
			if status, ready, err := s.passStartup(typ, n, cw, sr); err != nil || ready {
				return status, err
			}
		}
	}
}

// readSecret reads the current client message's n-byte body, which may
// hold a secret, into a new slice the caller clears, clearing the bytes
// in the reader's buffer as it goes. (A TLS connection's own record
// buffers are beyond reach.)
func readSecret(fr *frameReader, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	for len(out) < n {
		if fr.r.Buffered() == 0 {
			if _, err := fr.r.Peek(1); err != nil {
				return nil, unexpected(err)
			}
		}
		b, _ := fr.r.Peek(min(fr.r.Buffered(), n-len(out)))
		out = append(out, b...)
		clear(b)
		fr.r.Discard(len(b))
	}
	return out, nil
}

// sendSecret sends a password message carrying a secret (a cleartext
// password, an MD5 answer, a SCRAM message) straight to the server,
// after what sw holds, so that no copy stays in sw's buffer.
func (s *session) sendSecret(sw *bufio.Writer, body []byte) error {
	if err := sw.Flush(); err != nil {
		return err
	}
	msg := make([]byte, 5, 5+len(body))
	msg[0] = 'p'
	binary.BigEndian.PutUint32(msg[1:], uint32(len(body)+4))
	msg = append(msg, body...)
	_, err := s.up.Write(msg)
	clear(msg)
	return err
}

// passStartup passes on a server message of the startup phase that is not
// about authentication itself, the same for relayed and injected
// sessions: BackendKeyData (registered for cancel requests),
// ReadyForQuery (ready is then set, with the transaction status), and
// ParameterStatus, notices or NegotiateProtocolVersion as they are.
func (s *session) passStartup(typ byte, n int, cw *bufio.Writer, sr *frameReader) (status byte, ready bool, err error) {
	switch typ {
	case 'K':
		b, err := sr.body(n)
		if err != nil {
			return 0, false, err
		}
		return 0, false, writeMsg(cw, 'K', s.backendKey(b))
	case 'S':
		b, err := sr.body(n)
		if err != nil {
			return 0, false, err
		}
		s.paramStatus(b)
		return 0, false, writeMsg(cw, 'S', b)
	case 'Z':
		b, err := sr.body(n)
		if err != nil || len(b) != 1 {
			return 0, false, s.upstreamErr(cw, errors.New("malformed ReadyForQuery"))
		}
		if err := writeMsg(cw, 'Z', b); err != nil {
			return 0, false, err
		}
		return b[0], true, cw.Flush()
	default:
		// A notice, or NegotiateProtocolVersion: a reused connection
		// could not say them again.
		s.noPool(fmt.Sprintf("the server's login sent message %q", typ))
		return 0, false, sr.forward(cw, n)
	}
}

// paramStatus keeps a ParameterStatus the server sent, for the clients
// of the connection once pooled.
func (s *session) paramStatus(b []byte) {
	if !s.pooling {
		return
	}
	var ok bool
	if s.params, ok = setParam(s.params, b); !ok {
		s.noPool("the server reported too many parameters")
	}
}

// pooledLogin answers the client's StartupMessage for a session on a
// pooled connection: AuthenticationOk, the server's parameters, a cancel
// key of the session's own and ReadyForQuery, as a login would have.
func (s *session) pooledLogin(inj *enforcer.Injection, sc *serverConn, cr *frameReader, cw *bufio.Writer) error {
	if err := s.openTap(cr, cw); err != nil {
		return err
	}
	writeMsg(cw, 'R', []byte{0, 0, 0, authOK})
	for _, p := range s.params {
		b := append(append(append(append([]byte(nil), p.name...), 0), p.value...), 0)
		writeMsg(cw, 'S', b)
	}
	if sc.backend != nil {
		writeMsg(cw, 'K', s.backendKey(sc.backend))
	}
	writeMsg(cw, 'Z', []byte{'I'})
	if err := cw.Flush(); err != nil {
		return err
	}
	s.p.Log.Info("reused a server connection logged in with an injected credential", "credential", inj.Name, "db_user", inj.User,
		"rule", inj.Rule, "login_age", time.Since(sc.born).Round(time.Millisecond).String(), "upstream_tls", s.upstreamTLS)
	return nil
}

// authRequest reads the body of an Authentication message from the server
// and its request code; a short one ends the session.
func (s *session) authRequest(sr *frameReader, cw *bufio.Writer, n int) ([]byte, uint32, error) {
	b, err := sr.body(n)
	if err != nil || len(b) < 4 {
		return nil, 0, s.upstreamErr(cw, fmt.Errorf("short authentication request: %v", err))
	}
	return b, binary.BigEndian.Uint32(b), nil
}

// checkBinding refuses a SASLInitialResponse that cannot succeed through
// the proxy: a client asking for SCRAM-SHA-256-PLUS (which the proxy
// never offers), or one saying "y" (binding supported, server believed
// not to) to a server reached over TLS, which refuses that as a
// downgrade. The client gets a FATAL whose hint names what works.
func (s *session) checkBinding(cr *frameReader, cw *bufio.Writer, body []byte) error {
	refuse, err := bindingRefused(body, s.upstreamTLS)
	if err != nil {
		return s.clientErr(cw, err)
	}
	if !refuse {
		return nil
	}
	s.p.Log.Warn("client refused: its SCRAM channel binding cannot cross the TLS-terminating proxy", "client_tls", s.clientTLS, "upstream_tls", s.upstreamTLS)
	// The refusal is recorded; the client's SCRAM message is not.
	if err := s.openTap(cr, cw); err != nil {
		return err
	}
	writeMsg(cw, 'E', errorBody("FATAL", codeInvalidAuthorization,
		"sluice: SCRAM channel binding cannot pass through the proxy",
		"The client speaks TLS to Sluice, which keeps TLS to the server too; channel binding ties SCRAM to one TLS session, and these are two. Sluice never downgrades the server hop to plaintext.",
		"Connect with sslmode=prefer (the default: the client retries without TLS to the local proxy, and the server hop stays TLS) or disable, or set channel_binding=disable, or have Sluice authenticate with an injected credential (credential blocks), which uses SCRAM-SHA-256-PLUS to the server."))
	cw.Flush()
	return errors.New("client scram channel binding over two TLS hops")
}

// bindingRefused reads a SASLInitialResponse body (mechanism, length,
// client-first-message) and reports whether it cannot succeed through
// the proxy: SCRAM-SHA-256-PLUS or a "p=" gs2 header (binding to the
// client's TLS session, which the server never sees), or "y" when the
// server hop is TLS (PostgreSQL's auth-scram.c refuses that as a
// downgrade: "SCRAM channel binding negotiation error"). "n" always
// passes, and so does "y" to a server reached without TLS.
func bindingRefused(body []byte, upstreamTLS bool) (bool, error) {
	mech, rest, err := cstring(body)
	if err != nil || len(rest) < 4 {
		return false, &ProtocolError{Msg: "malformed SASLInitialResponse"}
	}
	data := rest[4:]
	switch {
	case mech == scramPlus || bytes.HasPrefix(data, []byte("p=")):
		return true, nil
	case upstreamTLS && bytes.HasPrefix(data, []byte("y,")):
		return true, nil
	}
	return false, nil
}

// stripSCRAMPlus removes SCRAM-SHA-256-PLUS from an AuthenticationSASL
// body (code, then NUL-terminated mechanism names, then a final NUL).
func stripSCRAMPlus(b []byte) []byte {
	out := append([]byte(nil), b[:4]...)
	rest := b[4:]
	for len(rest) > 0 && rest[0] != 0 {
		name, r, err := cstring(rest)
		if err != nil {
			return b
		}
		rest = r
		if name != scramPlus {
			out = append(append(out, name...), 0)
		}
	}
	return append(out, 0)
}

// upstreamErr tells the client the server connection failed, and returns err.
func (s *session) upstreamErr(cw *bufio.Writer, err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		fatal(cw, codeProtocolViolation, "sluice: the server sent an invalid message: "+pe.Msg)
	} else if !errors.Is(err, net.ErrClosed) {
		fatal(cw, codeConnectionFailure, "sluice: lost the connection to the server")
	}
	return err
}

// clientErr ends a session on a client-side failure; protocol violations
// are told to the client first.
func (s *session) clientErr(cw *bufio.Writer, err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		fatal(cw, codeProtocolViolation, "sluice: "+pe.Error())
	}
	return err
}

// Refuse answers a client whose connection the ruleset denies before any
// statement: it reads the startup packets (declining TLS and GSS
// encryption) and sends a FATAL ErrorResponse naming the rule, so the
// client reports a PostgreSQL error rather than a dropped connection.
// It closes c.
func Refuse(c net.Conn, rule, reason string) {
	refuseStartup(c, errorBody("FATAL", codeInsufficientPrivilege,
		fmt.Sprintf("sluice: connection denied by rule %q", rule), reason,
		"The runner's security ruleset has no policy that lets this job reach this database."))
}

// refuseStartup reads a client's startup packets, declining TLS and GSS
// encryption, and answers the StartupMessage with the ErrorResponse body.
// It closes c.
func refuseStartup(c net.Conn, body []byte) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < 4; i++ {
		pkt, err := readStartup(c)
		if err != nil {
			return
		}
		switch binary.BigEndian.Uint32(pkt) {
		case codeSSLRequest, codeGSSENCRequest:
			if _, err := c.Write([]byte{'N'}); err != nil {
				return
			}
		case pgproto3.ProtocolVersion30, pgproto3.ProtocolVersion32:
			w := bufio.NewWriter(c)
			writeMsg(w, 'E', body)
			w.Flush()
			return
		default:
			return
		}
	}
}
