package mysql

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/decoder/internal/rawio"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// UpstreamTLS says how to secure the proxy's own connection to the
// server: Attempt uses TLS whenever the server's greeting offers it;
// Required ends the session when it does not.
type UpstreamTLS = decoder.UpstreamSettings

// Params are one session's parts.
type Params struct {
	Client net.Conn
	// Dial reaches the original destination.
	Dial func(context.Context) (net.Conn, error)
	// Session decides commands and records the session.
	Session *enforcer.Session
	// Classify classifies statement text in a server's dialect; normally
	// a shared Cache's.
	Classify func(d Dialect, text string) (ruleset.Statement, error)
	// Upstream is the target's TLS mode, applied to the proxy's hop.
	Upstream UpstreamTLS
	// ClientTLS terminates TLS from clients, with a certificate of the
	// daemon's CA. Nil: clients are never offered TLS.
	ClientTLS *tls.Config
	// Masks builds the maskers of mask verdicts. Nil: a statement whose
	// verdict masks is denied.
	Masks *mask.Cache
	// MaxMessage bounds every packet from either side; 0 means
	// DefaultMaxMessage.
	MaxMessage int
	Log        hclog.Logger
}

// Stats are a session's totals, for the flow log.
type Stats struct {
	decoder.SessionStats
	ServerVersion string
}

// loginTimeout bounds each read of the login, from either side.
const loginTimeout = 30 * time.Second

// maxLoginPacket bounds a login packet: a greeting, a handshake
// response with its connection attributes, an authentication message or
// an RSA public key.
const maxLoginPacket = 64 << 10

// maxAuthRoundTrips bounds the authentication exchange.
const maxAuthRoundTrips = 32

// Serve runs one client session: the server's greeting, relayed with the
// capabilities the decoder cannot read withdrawn; TLS on either hop;
// authentication relayed between client and server, or answered by the
// proxy with a credential the ruleset grants (inject.go); then every command
// decided until either side ends. It owns p.Client and closes it. The
// client hears of denials and failures as MySQL ERR packets.
func Serve(ctx context.Context, p Params) (Stats, error) {
	if p.MaxMessage <= 0 {
		p.MaxMessage = DefaultMaxMessage
	}
	if p.Log == nil {
		p.Log = hclog.NewNullLogger()
	}
	s := &session{p: p, client: decoder.CountConn{Conn: rawio.Wrap(p.Client)}}
	s.tap.Session = p.Session
	s.decider = decoder.Decider{Session: p.Session, Masks: p.Masks}
	defer s.close()
	err := s.run(ctx)
	c := s.counts()
	return Stats{SessionStats: decoder.SessionStats{BytesFromClient: c.ClientToServer, BytesToClient: c.ServerToClient,
		User: s.user, Database: s.database, ClientUser: s.clientUser, Credential: s.credential,
		ClientTLS: s.clientTLS, UpstreamTLS: s.upstreamTLS, RelayCore: s.relayCore}, ServerVersion: s.version}, err
}

// session is one client connection's state.
type session struct {
	p       Params
	client  decoder.CountConn
	cconn   net.Conn // the client hop, after TLS if any
	up      net.Conn
	tap     decoder.WireTap
	decider decoder.Decider
	ctx     context.Context

	user, database         string
	clientUser, credential string // the user the client named and the credential injected in its place
	version                string
	dialect                Dialect
	clientTLS, upstreamTLS bool
	caps                   uint32              // the capabilities both hops agreed
	connID                 uint32              // the server's id of the session's connection (KILL QUERY names it)
	inj                    *enforcer.Injection // the credential the session logged in with, if any
	conns                  decoder.Conns

	// rawUp is the server's socket as dialed, for the relay core
	// (core.go). coreCounts counts the client's bytes while the
	// session ran on the core, later its connection after it left.
	rawUp      net.Conn
	relayCore  string // where the command phase ran (Stats.RelayCore)
	coreCounts decoder.Counts
	later      *decoder.CountConn
}

// counts are the client's bytes, as they crossed the network, over the
// session's life.
func (s *session) counts() decoder.Counts {
	c := decoder.ClientCounts{Before: &s.client, Core: s.coreCounts, After: s.later}
	return c.Counts()
}

// setCconn and setUp change what close acts on (decoder.Conns): a
// connection set after close ran is closed at once.
func (s *session) setCconn(c net.Conn) { s.cconn = s.conns.Client(c) }
func (s *session) setUp(c net.Conn)    { s.up = s.conns.Server(c) }

// close ends both hops; safe from any goroutine, more than once.
func (s *session) close() {
	s.conns.Close()
	s.client.Close()
}

func (s *session) run(ctx context.Context) error {
	s.ctx = ctx
	stop := context.AfterFunc(ctx, s.close)
	defer stop()
	s.setCconn(&s.client)

	lg, err := s.login(ctx)
	if err != nil {
		return err
	}
	r := newRelay(s, lg)
	return r.run()
}

// login is what the relay needs of the login: the readers and writers of
// both hops.
type login struct {
	cr, sr *packetReader
	cw, sw *packetWriter
}

// login relays the greeting and the authentication, and returns once the
// server accepted the client (its OK passed on), with the hops' readers.
func (s *session) login(ctx context.Context) (*login, error) {
	// 1. The server speaks first: its greeting holds the scramble the
	// client's answer is computed from, so it is the server's own, passed
	// on with the capabilities the decoder cannot read taken out.
	up, err := s.p.Dial(ctx)
	if err != nil {
		s.refuseGreeting(codeConnKilled, "sluice: cannot reach the database: "+err.Error())
		return nil, err
	}
	s.rawUp = up
	s.setUp(rawio.Wrap(up))
	s.up.SetReadDeadline(time.Now().Add(loginTimeout))
	greet, _, err := readPacket(s.up)
	if err != nil {
		s.refuseGreeting(codeConnKilled, "sluice: the database sent no greeting")
		return nil, fmt.Errorf("read greeting: %w", err)
	}
	cw := newPacketWriter(s.cconn)
	if len(greet) > 0 && greet[0] == 0xff {
		// The server refuses this host (too many connections, blocked):
		// its error is the client's.
		cw.write(greet)
		cw.flush()
		return nil, fmt.Errorf("the server refused the connection: %s", parseErr(greet).msg)
	}
	g, err := parseGreeting(greet)
	if err != nil {
		s.refuseGreeting(codeHandshake, "sluice: the database sent a greeting the proxy cannot read: "+err.Error())
		return nil, err
	}
	s.version, s.connID = g.version, g.connID()
	s.dialect.MariaDB, s.dialect.Version = parseServerVersion(g.version)
	s.dialect.NoBackslashEscapes = g.status&statusNoBackslashEscapes != 0

	upTLS := s.p.Upstream.Attempt && g.caps&capSSL != 0
	if s.p.Upstream.Required && !upTLS {
		s.refuseGreeting(codeHandshake, "sluice: the database does not offer TLS, and the target requires it")
		return nil, errors.New("the server does not support TLS, and the target requires it")
	}
	if g.caps&capProtocol41 == 0 || g.caps&capSecureConnection == 0 {
		s.refuseGreeting(codeHandshake, "sluice: the database speaks a protocol older than 4.1, which the proxy does not relay")
		return nil, errors.New("server without CLIENT_PROTOCOL_41")
	}
	// The client is offered TLS exactly when the server hop has it, as a
	// client connecting directly would have been: a client requiring TLS
	// fails or succeeds as it would have.
	offer := g.caps & capsUnderstood &^ capSSL
	if upTLS && s.p.ClientTLS != nil {
		offer |= capSSL
	}
	cw.seq = 0
	if err := cw.write(g.withCaps(offer)); err != nil {
		return nil, err
	}
	if err := cw.flush(); err != nil {
		return nil, err
	}
	if s.p.Session.WantsWire() {
		// The recording starts with the greeting as the client got it,
		// so an export decodes from the start; the client's answer and
		// the authentication exchange are not recorded (they carry the
		// password's proof). The tap opens at the server's verdict.
		if err := s.p.Session.Wire(record.DirServerToClient, framed(g.withCaps(offer), 0)); err != nil {
			return nil, err
		}
	}

	// 2. The client's answer: a TLS request first, or straight the
	// handshake response. Read without buffering: a client sends its
	// TLS ClientHello right behind the request.
	s.cconn.SetReadDeadline(time.Now().Add(loginTimeout))
	resp, cseq, err := readPacket(s.cconn)
	if err != nil {
		return nil, fmt.Errorf("read handshake response: %w", err)
	}
	if len(resp) < 32 {
		s.loginErr(cw, cseq+1, codeHandshake, stateHandshake, "sluice: a handshake response too short to read")
		return nil, errors.New("short handshake response")
	}
	ccaps := le32(resp)
	if ccaps&capSSL != 0 && len(resp) == 32 {
		if offer&capSSL == 0 {
			s.loginErr(cw, cseq+1, codeHandshake, stateHandshake, "sluice: TLS was not offered")
			return nil, errors.New("client asked for TLS that was not offered")
		}
		tc, err := decoder.ServerHandshake(ctx, s.cconn, s.p.ClientTLS)
		if err != nil {
			return nil, err
		}
		s.setCconn(tc)
		s.clientTLS = true
		s.cconn.SetReadDeadline(time.Now().Add(loginTimeout))
		if resp, cseq, err = readPacket(s.cconn); err != nil {
			return nil, fmt.Errorf("read handshake response: %w", err)
		}
		if len(resp) < 32 {
			s.loginErr(newPacketWriter(s.cconn), cseq+1, codeHandshake, stateHandshake, "sluice: a handshake response too short to read")
			return nil, errors.New("short handshake response")
		}
		ccaps = le32(resp)
	}
	if s.p.Session.WantsWire() {
		// What the client sends and receives from here on, in the
		// clear (after TLS), recorded once the tap opens.
		s.setCconn(decoder.Tapped(s.cconn, s.tapWrites))
	}
	cw = newPacketWriter(s.cconn)
	cr := newPacketReader(s.cconn, maxLoginPacket)
	hr, err := parseResponse(resp)
	if err != nil {
		s.loginErr(cw, cseq+1, codeHandshake, stateHandshake, "sluice: "+err.Error())
		return nil, err
	}
	s.user, s.database = hr.user, hr.database
	if extra := ccaps & capsFraming &^ offer; extra != 0 {
		// The client asks for framing the proxy withdrew (compression,
		// say): what it would send could not be decoded. Other bits the
		// greeting did not offer are dropped below, as a server ignores
		// them.
		s.loginErr(cw, cseq+1, codeHandshake, stateHandshake, "sluice: the client asks for capabilities the proxy does not relay: "+capList(extra))
		return nil, fmt.Errorf("client capabilities not offered: %s", capList(extra))
	}
	if ccaps&capProtocol41 == 0 {
		s.loginErr(cw, cseq+1, codeHandshake, stateHandshake, "sluice: the client speaks a protocol older than 4.1, which the proxy does not relay")
		return nil, errors.New("client without CLIENT_PROTOCOL_41")
	}
	// What both sides can speak: the client's wishes among what the
	// proxy offered (see capsUnderstood).
	s.caps = ccaps & offer &^ capSSL

	// How the server hop authenticates: with the client's own answer, or
	// with a credential the ruleset grants this job (see inject.go). A
	// flow refused one is told now, before anything is sent the server.
	inj, err := s.injection(cw, cseq+1)
	s.inj = inj
	if err != nil {
		return nil, err
	}
	var secret []byte
	if inj != nil {
		s.clientUser, s.user, s.credential = hr.user, inj.User, inj.Name
		var wipe func()
		if secret, wipe, err = s.fetchSecret(ctx, inj, cw, cseq+1); err != nil {
			return nil, err
		}
		defer wipe()
	}

	// 3. The server hop: TLS when the target's mode and the server say
	// so, then the response with the agreed capabilities: the client's,
	// or the proxy's own with an injected credential.
	sr := newPacketReader(s.up, maxLoginPacket)
	sw := newPacketWriter(s.up)
	sseq := byte(1)
	reqCaps := s.caps // what the TLS request says: the response's capabilities
	if inj != nil {
		reqCaps = injectedCaps(s.caps, g.caps, hr.database)
	}
	if upTLS {
		ssl := make([]byte, 32)
		copy(ssl, resp[:32])
		put32(ssl, reqCaps|capSSL)
		clear(ssl[28:32]) // MariaDB's extended capabilities
		sw.seq = sseq
		if err := sw.write(ssl); err != nil {
			return nil, err
		}
		if err := sw.flush(); err != nil {
			return nil, err
		}
		tc, err := decoder.ClientHandshake(ctx, s.up, s.p.Upstream.Config)
		if err != nil {
			s.loginErr(cw, cseq+1, codeHandshake, stateHandshake, "sluice: TLS to the database failed: "+err.Error())
			return nil, err
		}
		s.setUp(tc)
		s.upstreamTLS = true
		sr = newPacketReader(s.up, maxLoginPacket)
		sw = newPacketWriter(s.up)
		sseq++
	}
	if inj != nil {
		// 4. Authentication answered by the proxy; the client hears the
		// outcome only.
		err := s.injectAuth(inj, secret, g, reqCaps, resp, hr.database, cw, sr, sw, sseq, cseq)
		clear(resp) // the client's answer, never used
		if err != nil {
			return nil, err
		}
		s.cconn.SetReadDeadline(time.Time{})
		s.up.SetReadDeadline(time.Time{})
		cr.max, sr.max = s.p.MaxMessage, s.p.MaxMessage
		return &login{cr: cr, sr: sr, cw: cw, sw: sw}, nil
	}
	upCaps := s.caps
	if upTLS {
		upCaps |= capSSL
	}
	put32(resp, upCaps)
	clear(resp[28:32])
	sw.seq = sseq
	err = sw.write(resp)
	clear(resp) // the response holds the password's proof
	if err == nil {
		err = sw.flush()
	}
	if err != nil {
		return nil, err
	}

	// 4. Authentication, relayed until the server says OK or ERR. Each
	// hop keeps its own sequence ids: they differ by the TLS request
	// either hop had.
	delta := int(sseq) - int(cseq)
	if err := s.authenticate(cr, cw, sr, sw, delta); err != nil {
		return nil, err
	}
	s.cconn.SetReadDeadline(time.Time{})
	s.up.SetReadDeadline(time.Time{})
	cr.max, sr.max = s.p.MaxMessage, s.p.MaxMessage
	return &login{cr: cr, sr: sr, cw: cw, sw: sw}, nil
}

// authenticate relays the authentication exchange: each server packet to
// the client, and the client's answer back, until the server's OK (the
// session starts) or ERR (it ends). Every server packet but OK, ERR and
// caching_sha2_password's "fast authentication succeeded" (0x01 0x03)
// asks the client for an answer: an auth switch (0xfe), more data (0x01:
// a full-authentication request, an RSA public key), or a plugin's own
// question. The client's answers, which carry passwords or their proofs,
// are neither recorded nor kept.
func (s *session) authenticate(cr *packetReader, cw *packetWriter, sr *packetReader, sw *packetWriter, delta int) error {
	for round := 0; ; round++ {
		if round > maxAuthRoundTrips {
			s.loginErr(cw, sr.seq+1, codeHandshake, stateHandshake, "sluice: too many authentication round trips")
			return errors.New("too many authentication round trips")
		}
		s.up.SetReadDeadline(time.Now().Add(loginTimeout))
		b, seq, err := sr.next()
		if err != nil {
			s.loginErr(cw, byte(int(sr.seq)-delta+1), codeConnKilled, stateConnKilled, "sluice: lost the connection to the database during login")
			return fmt.Errorf("read authentication: %w", err)
		}
		if len(b) == 0 {
			return &ProtocolError{Msg: "an empty authentication packet from the server"}
		}
		cw.seq = byte(int(seq) - delta)
		switch b[0] {
		case 0x00:
			// Recording starts with the server's OK. What the client
			// sends is recorded packet by packet as the relay reads it
			// (recordClient), so nothing is pending here.
			if err := s.openTap(cw, cw.seq); err != nil {
				return err
			}
			if st, err := okStatus(b); err == nil {
				s.dialect.NoBackslashEscapes = st&statusNoBackslashEscapes != 0
			}
			if err := cw.write(b); err != nil {
				return err
			}
			return cw.flush()
		case 0xff:
			if err := s.openTap(cw, cw.seq); err != nil {
				return err
			}
			cw.write(b)
			cw.flush()
			return fmt.Errorf("the server refused the login: %s", parseErr(b).msg)
		}
		if err := cw.write(b); err != nil {
			return err
		}
		if err := cw.flush(); err != nil {
			return err
		}
		if len(b) == 2 && b[0] == 0x01 && b[1] == 0x03 {
			continue // fast authentication succeeded: the OK follows
		}
		s.cconn.SetReadDeadline(time.Now().Add(loginTimeout))
		a, aseq, err := cr.next()
		if err != nil {
			return fmt.Errorf("read authentication answer: %w", err)
		}
		sw.seq = byte(int(aseq) + delta)
		err = sw.write(a)
		clear(a)
		if err == nil {
			err = sw.flush()
		}
		if err != nil {
			return err
		}
	}
}

// openTap starts recording the client hop at the server's verdict on a
// login (decoder.WireTap): what the client was sent until then is flushed
// unrecorded. What the client sends is recorded packet by packet as the
// relay reads it (recordClient), so nothing is pending here. A recording
// that cannot start ends the session: the client gets an ERR with
// sequence id seq.
func (s *session) openTap(cw *packetWriter, seq byte) error {
	if !s.tap.Waiting() {
		return nil
	}
	if err := cw.flush(); err != nil {
		return err
	}
	if err := s.tap.Open(nil); err != nil {
		s.loginErr(cw, seq, codeConnKilled, stateConnKilled, "sluice: the session cannot be recorded")
		return err
	}
	return nil
}

// refuseGreeting answers the client, before any greeting, with an ERR
// packet (no SQL state: nothing is agreed yet), and ends the session.
func (s *session) refuseGreeting(code uint16, msg string) {
	w := newPacketWriter(s.cconn)
	w.write(appendErr(nil, code, "", msg, false))
	w.flush()
}

// loginErr sends an ERR packet with sequence id seq during the login.
func (s *session) loginErr(w *packetWriter, seq byte, code uint16, state, msg string) {
	w.seq = seq
	w.write(appendErr(nil, code, state, msg, true))
	w.flush()
}

// readPacket reads one packet of the login without reading past it
// (single-frame: login packets are small).
func readPacket(c net.Conn) ([]byte, byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return nil, 0, err
	}
	n := int(h[0]) | int(h[1])<<8 | int(h[2])<<16
	if n > maxLoginPacket {
		return nil, 0, errTooLarge(n, maxLoginPacket)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return nil, 0, unexpected(err)
	}
	return b, h[3], nil
}

// framed returns payload b with a frame header of sequence id seq (for a
// recording, which holds the bytes as they crossed the wire).
func framed(b []byte, seq byte) []byte {
	n := len(b)
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq}, b...)
}

// greeting is the server's HandshakeV10, kept whole so that it is passed
// on as the server sent it, but for its capabilities.
type greeting struct {
	raw     []byte
	version string
	caps    uint32
	status  uint16
	capLow  int // offset of the capabilities' low half
	capHigh int // offset of their high half, 0 when the greeting stops before it
	ext     int // offset of MariaDB's extended capabilities, 0 when absent
}

// parseGreeting reads a HandshakeV10 payload.
func parseGreeting(b []byte) (greeting, error) {
	g := greeting{raw: b}
	if len(b) < 1 || b[0] != 10 {
		return g, &ProtocolError{Msg: "not a protocol 10 greeting"}
	}
	v, rest, err := cstring(b[1:])
	if err != nil {
		return g, err
	}
	g.version = string(v)
	off := len(b) - len(rest) + 4 + 8 + 1 // connection id, scramble, filler
	if len(b) < off+2 {
		return g, errShort
	}
	g.capLow = off
	g.caps = uint32(le16(b[off:]))
	if len(b) >= off+2+1+2+2 {
		g.status = le16(b[off+3:])
		g.capHigh = off + 5
		g.caps |= uint32(le16(b[g.capHigh:])) << 16
		if len(b) >= off+18 {
			g.ext = off + 14
		}
	}
	return g, nil
}

// connID returns the connection id the greeting names.
func (g greeting) connID() uint32 {
	at := 1 + len(g.version) + 1
	if len(g.raw) < at+4 {
		return 0
	}
	return le32(g.raw[at:])
}

// withCaps returns the greeting with capabilities caps, and MariaDB's
// extended capabilities cleared.
func (g greeting) withCaps(caps uint32) []byte {
	b := append([]byte(nil), g.raw...)
	b[g.capLow], b[g.capLow+1] = byte(caps), byte(caps>>8)
	if g.capHigh != 0 {
		b[g.capHigh], b[g.capHigh+1] = byte(caps>>16), byte(caps>>24)
	}
	if g.ext != 0 {
		clear(b[g.ext : g.ext+4])
	}
	return b
}

// response is what the decoder reads of a HandshakeResponse41.
type response struct {
	user, database, plugin string
}

// parseResponse reads a HandshakeResponse41 payload.
func parseResponse(b []byte) (response, error) {
	var r response
	caps := le32(b)
	rest := b[32:]
	u, rest, err := cstring(rest)
	if err != nil {
		return r, &ProtocolError{Msg: "a handshake response without a user name"}
	}
	r.user = string(u)
	switch {
	case caps&capPluginAuthLenenc != 0:
		_, rest, _, err = readLenencString(rest)
	case caps&capSecureConnection != 0:
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return r, errShort
		}
		rest = rest[1+int(rest[0]):]
	default:
		_, rest, err = cstring(rest)
	}
	if err != nil {
		return r, &ProtocolError{Msg: "a handshake response with a malformed authentication answer"}
	}
	if caps&capConnectWithDB != 0 && len(rest) > 0 {
		var db []byte
		if db, rest, err = cstring(rest); err != nil {
			return r, &ProtocolError{Msg: "a handshake response with a malformed database name"}
		}
		r.database = string(db)
	}
	if caps&capPluginAuth != 0 && len(rest) > 0 {
		p, r2, err := cstring(rest)
		if err != nil {
			p, r2 = rest, nil // some clients end the packet with the name
		}
		r.plugin, rest = string(p), r2
	}
	_ = rest
	return r, nil
}

// errClosed reports whether err is the end of a connection rather than a
// failure worth a log line.
func errClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF)
}
