package decodertest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// PG is the frontend (client) side of PostgreSQL's protocol over a
// Harness's client hop: it sends pgproto3 frontend messages, or raw
// bytes, and reads the backend's messages as frames of their own
// (Msg), so a test keeps every message it read. Its methods fail the
// test on an error or a timeout.
type PG struct {
	h *Harness
	r *bufio.Reader
}

// PG returns the PostgreSQL frontend of h's client hop. Call it once per
// harness: it owns the reading side.
func (h *Harness) PG() *PG {
	return &PG{h: h, r: bufio.NewReader(h.Client)}
}

// Msg is one backend message: its type byte and body. Body is the
// message's own copy.
type Msg struct {
	Type byte
	Body []byte
}

// String shows the message's type and, for errors and notices, its
// severity, code and text.
func (m Msg) String() string {
	if e := m.Error(); e != nil {
		return fmt.Sprintf("%c %s %s %s", m.Type, e.Severity, e.Code, e.Message)
	}
	return fmt.Sprintf("%c (%d bytes)", m.Type, len(m.Body))
}

// Error decodes an ErrorResponse ('E') or NoticeResponse ('N'); nil for
// any other message.
func (m Msg) Error() *pgproto3.ErrorResponse {
	if m.Type != 'E' && m.Type != 'N' {
		return nil
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(m.Body); err != nil {
		return &pgproto3.ErrorResponse{Message: "undecodable: " + err.Error()}
	}
	return &e
}

// Errors returns the ErrorResponses among msgs, in order.
func Errors(msgs []Msg) []*pgproto3.ErrorResponse {
	var out []*pgproto3.ErrorResponse
	for _, m := range msgs {
		if m.Type == 'E' {
			out = append(out, m.Error())
		}
	}
	return out
}

// Types returns the type bytes of msgs as a string ("1 2 T D C Z" without
// spaces: "12TDCZ"), for comparing sequences.
func Types(msgs []Msg) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteByte(m.Type)
	}
	return b.String()
}

// Encode encodes frontend messages into one byte slice, as a client
// writes a pipeline. A message that cannot be encoded panics: it is a
// test's typo.
func Encode(msgs ...pgproto3.FrontendMessage) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			panic(fmt.Sprintf("decodertest: encode %T: %v", m, err))
		}
	}
	return b
}

// Send sends msgs in one write.
func (p *PG) Send(msgs ...pgproto3.FrontendMessage) {
	p.h.t.Helper()
	p.h.Send(Encode(msgs...))
}

// Startup sends a protocol 3.0 StartupMessage with params (user,
// database, options, ...).
func (p *PG) Startup(params map[string]string) {
	p.h.t.Helper()
	p.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
}

// Login sends a StartupMessage for user to database postgres, with extra
// parameters, and reads the server's answer up to ReadyForQuery. The
// server must trust the user (testenv's default); an ErrorResponse fails
// the test.
func (p *PG) Login(user string, extra map[string]string) []Msg {
	p.h.t.Helper()
	params := map[string]string{"user": user, "database": "postgres"}
	for k, v := range extra {
		params[k] = v
	}
	p.Startup(params)
	msgs := p.UntilReady()
	if errs := Errors(msgs); len(errs) > 0 {
		p.h.t.Fatalf("decodertest: login refused: %s %s", errs[0].Code, errs[0].Message)
	}
	return msgs
}

// Query sends a simple Query and returns the answer up to ReadyForQuery.
func (p *PG) Query(text string) []Msg {
	p.h.t.Helper()
	p.Send(&pgproto3.Query{String: text})
	return p.UntilReady()
}

// Receive returns the next backend message, failing the test when none
// arrives within the timeout or the session ends first.
func (p *PG) Receive() Msg {
	p.h.t.Helper()
	m, err := p.next()
	if err != nil {
		p.h.t.Fatalf("decodertest: receive: %v", err)
	}
	return m
}

// UntilReady returns the messages up to and including the next
// ReadyForQuery.
func (p *PG) UntilReady() []Msg {
	p.h.t.Helper()
	var out []Msg
	for {
		m, err := p.next()
		if err != nil {
			p.h.t.Fatalf("decodertest: no ReadyForQuery: %v; received %v", err, out)
		}
		out = append(out, m)
		if m.Type == 'Z' {
			return out
		}
	}
}

// UntilEnd returns the messages until the handler closes the client hop,
// failing the test if it is still open after the timeout or ends in the
// middle of a message. It is how a test waits for a session that must
// end.
func (p *PG) UntilEnd() []Msg {
	p.h.t.Helper()
	var out []Msg
	for {
		m, err := p.next()
		if errors.Is(err, io.EOF) || err != nil && isReset(err) {
			return out
		}
		if err != nil {
			p.h.t.Fatalf("decodertest: the session did not end: %v; received %v", err, out)
		}
		out = append(out, m)
	}
}

// Answer reads one byte the backend sent outside a message: the answer
// to an SSLRequest or GSSENCRequest.
func (p *PG) Answer() byte {
	p.h.t.Helper()
	p.h.Client.SetReadDeadline(time.Now().Add(p.h.to))
	defer p.h.Client.SetReadDeadline(time.Time{})
	b, err := p.r.ReadByte()
	if err != nil {
		p.h.t.Fatalf("decodertest: read a byte: %v", err)
	}
	return b
}

// next reads one message within the timeout. A clean end of the stream
// between messages is io.EOF; inside one, io.ErrUnexpectedEOF.
func (p *PG) next() (Msg, error) {
	p.h.Client.SetReadDeadline(time.Now().Add(p.h.to))
	defer p.h.Client.SetReadDeadline(time.Time{})
	var hdr [5]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return Msg{}, err
	}
	n := int(int32(binary.BigEndian.Uint32(hdr[1:]))) - 4
	if n < 0 || n > 64<<20 {
		return Msg{}, fmt.Errorf("backend message %q with invalid length %d", hdr[0], n+4)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(p.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Msg{}, err
	}
	return Msg{Type: hdr[0], Body: body}, nil
}
