package mysql

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer/record"
)

// Stopping a refused result on the server. When the rules refuse a
// result part way (a hold refused at row N, a result that cannot be
// masked), the rows already sent stay sent, and the rest must not reach
// the client. MySQL has no cancel message on the session's own
// connection: a query is stopped by KILL QUERY from another connection,
// logged in as the same user (or one with the PROCESS/CONNECTION ADMIN
// privilege). Where the proxy logged the session in with an injected
// credential it can do that itself: it logs in with the same credential
// on a side connection (the same TLS settings, the same answers to the
// server's authentication) and sends KILL QUERY naming the session's
// connection id from the greeting. The session's reader goes on reading
// and dropping what the server sends until the server ends the result
// (with error 1317, "Query execution was interrupted"). Without a
// credential the proxy holds no password, and the rest of the result is
// read and dropped as the server produces it.

// stopResult stops the command running on the server where the session
// can (an injected login), in the background (decoder.CancelCommand).
func (r *relay) stopResult() {
	if r.s.inj == nil || r.s.connID == 0 {
		return
	}
	decoder.CancelCommand(r.s.killQuery, r.s.p.Log)
}

// killQuery logs in on a side connection with the session's injected
// credential and sends KILL QUERY for the session's connection.
func (s *session) killQuery(ctx context.Context) error {
	sec, err := s.inj.Secret(ctx)
	if err != nil {
		return fmt.Errorf("read the credential for KILL QUERY: %w", err)
	}
	defer sec.Wipe()
	up, err := s.p.Dial(ctx)
	if err != nil {
		return fmt.Errorf("dial for KILL QUERY: %w", err)
	}
	defer up.Close()
	if d, ok := ctx.Deadline(); ok {
		up.SetDeadline(d)
	}
	// A session of its own, for the login: it shares the parameters (the
	// dial, the TLS settings, the log) and reports to the same recording.
	side := &session{p: s.p, ctx: ctx, clientUser: s.clientUser}
	side.tap.Session = s.p.Session
	side.up = up
	greet, _, err := readPacket(up)
	if err != nil {
		return fmt.Errorf("read the greeting for KILL QUERY: %w", err)
	}
	g, err := parseGreeting(greet)
	if err != nil {
		return err
	}
	caps := injectedCaps(s.caps, g.caps, "")
	stub := make([]byte, 32) // a client's response: its maximum packet and character set
	put32(stub[4:], 1<<24)
	stub[8] = 45 // utf8mb4_general_ci
	sw := newPacketWriter(up)
	sseq := byte(1)
	if s.upstreamTLS {
		ssl := make([]byte, 32)
		copy(ssl, stub)
		put32(ssl, caps|capSSL)
		sw.seq = sseq
		if err := sw.write(ssl); err != nil {
			return err
		}
		if err := sw.flush(); err != nil {
			return err
		}
		tc, err := decoder.ClientHandshake(ctx, up, s.p.Upstream.Config)
		if err != nil {
			return err
		}
		defer tc.Close()
		side.up, side.upstreamTLS = tc, true
		sw = newPacketWriter(tc)
		sseq++
	}
	sr := newPacketReader(side.up, maxLoginPacket)
	discard := newPacketWriter(io.Discard) // the client side of the login: nobody
	if err := side.injectAuth(s.inj, sec.Bytes(), g, caps, stub, "", discard, sr, sw, sseq, 0); err != nil {
		return fmt.Errorf("log in for KILL QUERY: %w", err)
	}
	q := "KILL QUERY " + strconv.FormatUint(uint64(s.connID), 10)
	sw.seq = 0
	if err := sw.write(append([]byte{comQuery}, q...)); err != nil {
		return err
	}
	if err := sw.flush(); err != nil {
		return err
	}
	ans, _, err := sr.next()
	if err != nil {
		return fmt.Errorf("KILL QUERY: %w", err)
	}
	if len(ans) > 0 && ans[0] == 0xff {
		return fmt.Errorf("KILL QUERY refused by the server: %s", parseErr(ans).msg)
	}
	s.p.Log.Info("refused result stopped on the server with KILL QUERY", "connection_id", s.connID, "credential", s.inj.Name)
	s.p.Session.Record(record.Metadata, record.Event{Type: record.TypeNote,
		Reason: fmt.Sprintf("the refused result was stopped on the server (KILL QUERY %d on a side connection, as %s)", s.connID, s.inj.User)})
	return nil
}
