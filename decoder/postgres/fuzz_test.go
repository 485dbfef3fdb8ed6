package postgres

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/netip"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// fuzzMax is the message limit under fuzzing, small so the limit is hit.
const fuzzMax = 4096

func msg(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(body)+4))
	return append(b, body...)
}

func fuzzRelay(in []byte) (*relay, *bytes.Buffer, *bytes.Buffer) {
	var toServer, toClient bytes.Buffer
	r := testRelay(ruleset.Default(), bytes.NewReader(in), bytes.NewReader(in), &toServer, &toClient, fuzzMax)
	return r, &toServer, &toClient
}

// testRelay is the relay of a session on target "postgres" (10.0.0.5:5432)
// under rs, unrecorded, reading the client's messages from client and the
// server's from server, and writing what each side gets to toServer and
// toClient; max bounds every message.
func testRelay(rs *ruleset.Ruleset, client, server io.Reader, toServer, toClient io.Writer, max int) *relay {
	m := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "postgres", Protocol: "postgres", Addr: netip.MustParseAddrPort("10.0.0.5:5432")}})
	s := &session{p: Params{Session: enforcer.NewSession(context.Background(), m, nil, 0, hclog.NewNullLogger()), Classify: NewCache(64).Classify,
		Masks: mask.NewCache(make([]byte, 32)), Log: hclog.NewNullLogger()}, nonce: "fuzz", catalog: newCatalog()}
	r := &relay{s: s, cr: newFrameReader(client, max), sr: newFrameReader(server, max),
		sw: bufio.NewWriter(toServer), cw: bufio.NewWriter(toClient)}
	r.init()
	return r
}

// wellFramed reports whether b is a sequence of complete messages within
// the limit: what the relay forwards must always be.
func wellFramed(b []byte) bool {
	for len(b) > 0 {
		if len(b) < 5 {
			return false
		}
		n := int(int32(binary.BigEndian.Uint32(b[1:])))
		if n < 4 || n-4 > fuzzMax || len(b) < 1+n {
			return false
		}
		b = b[1+n:]
	}
	return true
}

// FuzzClientStream feeds arbitrary bytes as a client's messages after
// startup. The relay must not panic, and everything it forwards to the
// server must be whole, in-limit messages: a malformed or oversized
// message is never passed on, even in part.
func FuzzClientStream(f *testing.F) {
	f.Add(msg('Q', "SELECT 1\x00"))
	f.Add(append(msg('Q', "DROP TABLE t\x00"), msg('X', "")...))
	f.Add(bytes.Join([][]byte{msg('P', "s1\x00SELECT $1\x00\x00\x00"), msg('B', "p1\x00s1\x00\x00\x00\x00\x00\x00\x00"), msg('E', "p1\x00\x00\x00\x00\x00"), msg('S', "")}, nil))
	f.Add(msg('Q', "SELEC oops\x00"))
	f.Add([]byte{'Q', 0, 0, 0, 2})
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff})
	f.Add(msg('F', "\x00\x00\x00\x01"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, toServer, _ := fuzzRelay(in)
		r.clientLoop()
		// Only what the relay flushed itself counts: a message cut short
		// by the end of input stays in the buffer and dies with the
		// session.
		if !wellFramed(toServer.Bytes()) {
			t.Fatalf("forwarded a malformed stream: %q", toServer.Bytes())
		}
	})
}

// FuzzServerStream feeds arbitrary bytes as a server's messages. The relay
// must not panic and must pass on only whole, in-limit messages.
func FuzzServerStream(f *testing.F) {
	f.Add(bytes.Join([][]byte{msg('T', "\x00\x01a\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00"), msg('D', "\x00\x01\x00\x00\x00\x011"), msg('C', "SELECT 1\x00"), msg('Z', "I")}, nil))
	f.Add(msg('E', "SERROR\x00C42883\x00Mfunction pg_catalog.sluice_denied_fuzz() does not exist\x00\x00"))
	f.Add(msg('Z', "TT"))
	f.Add([]byte{'D', 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, in []byte) {
		r, _, toClient := fuzzRelay(in)
		// The server answers a masked query, a batch and another query.
		c := r.decide("SELECT email FROM users")
		r.push(&op{typ: 'Q', it: &item{c: c, simple: true}})
		r.push(&op{typ: 'P', name: "s"})
		r.push(&op{typ: 'B', name: "", stmt: "s"})
		r.push(&op{typ: 'D', obj: 'P'})
		r.push(&op{typ: 'E', it: &item{c: c}})
		r.push(&op{typ: 'S'})
		r.push(&op{typ: 'Q', it: &item{c: c, simple: true}, denial: []byte("SERROR\x00C42501\x00Mdenied\x00\x00")})
		r.serverLoop()
		if !wellFramed(toClient.Bytes()) {
			t.Fatalf("sent the client a malformed stream: %q", toClient.Bytes())
		}
	})
}

// FuzzStartup feeds arbitrary startup packets.
func FuzzStartup(f *testing.F) {
	sm := []byte{0, 0, 0, 0, 0, 3, 0, 0}
	sm = append(sm, "user\x00postgres\x00\x00"...)
	binary.BigEndian.PutUint32(sm, uint32(len(sm)))
	f.Add(sm)
	f.Add([]byte{0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f})
	f.Add([]byte{0, 0, 0, 16, 4, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		if _, err := readStartup(bytes.NewReader(in)); err != nil {
			return
		}
	})
}
