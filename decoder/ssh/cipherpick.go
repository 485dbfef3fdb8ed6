package ssh

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// SSH picks the first cipher in the client's list that the server has,
// so the order of Sluice's own list does not matter, only what is in it.
// OpenSSH's client lists chacha20-poly1305 (not offered: see jobCiphers),
// then the CTR ciphers, then GCM: offered both, it takes aes128-ctr with
// an HMAC-SHA2-256, whose hash was a seventh of the proxy's CPU in an scp
// (perf, 2026-12-05). So Sluice reads the job's KEXINIT before its
// handshake starts and offers GCM alone to a client that has it, and the
// CTR ciphers too to one that has not (paramiko, for one).

// gcmCiphers are the AEAD ciphers x/crypto runs with AES-NI.
var gcmCiphers = []string{"aes128-gcm@openssh.com", "aes256-gcm@openssh.com"}

// kexPeekWait bounds the wait for the job's KEXINIT. A client that waits
// for the server's KEXINIT before it sends its own (RFC 4253 lets both
// send at once, and OpenSSH, x/crypto, paramiko and libssh do) gets the
// whole list after this.
const kexPeekWait = 2 * time.Second

// maxPeek bounds what is read ahead: the version exchange's lines (255
// bytes each, at most a few) and one packet (35000 bytes, RFC 4253 6.1).
const maxPeek = 40 << 10

// pickJobCiphers sends Sluice's version line to the job, reads the job's
// version line and KEXINIT, and returns the ciphers to offer it, with a
// connection that replays what was read and leaves out x/crypto's own
// version line (sent already). Whatever it cannot read or parse, it
// leaves to x/crypto's handshake, which reads the same bytes, with
// jobCiphers offered.
func pickJobCiphers(cc net.Conn, deadline time.Time) (net.Conn, []string) {
	line := []byte(version + "\r\n")
	pc := &peekedConn{Conn: cc, skip: line}
	if _, err := cc.Write(line); err != nil {
		pc.skip = nil // x/crypto will fail on its own write
		return pc, jobCiphers
	}
	peek := time.Now().Add(kexPeekWait)
	if deadline.Before(peek) {
		peek = deadline
	}
	cc.SetReadDeadline(peek)
	rec := &recorder{r: cc}
	ciphers := clientCiphers(bufio.NewReaderSize(rec, 4096))
	cc.SetReadDeadline(deadline)
	pc.replay = rec.buf
	if len(ciphers) == 0 || !slices.ContainsFunc(ciphers, func(c string) bool { return slices.Contains(gcmCiphers, c) }) {
		return pc, jobCiphers
	}
	return pc, gcmCiphers
}

// clientCiphers reads a client's version exchange and its first packet,
// and returns the client-to-server ciphers of its KEXINIT, or nil.
func clientCiphers(br *bufio.Reader) []string {
	for range 8 { // lines before the version line, then the version line
		l, err := br.ReadSlice('\n')
		if err != nil {
			return nil
		}
		if bytes.HasPrefix(l, []byte("SSH-")) {
			if !bytes.HasPrefix(l, []byte("SSH-2.0-")) && !bytes.HasPrefix(l, []byte("SSH-1.99-")) {
				return nil
			}
			return kexInitCiphers(br)
		}
	}
	return nil
}

// kexInitCiphers reads one unencrypted packet and, if it is a KEXINIT,
// returns its client-to-server ciphers.
func kexInitCiphers(br *bufio.Reader) []string {
	var hdr [5]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	pad := int(hdr[4])
	if n < 1+17 || n > 35000 || pad >= int(n) {
		return nil
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(br, body); err != nil {
		return nil
	}
	payload := body[:len(body)-pad]
	if len(payload) < 17 || payload[0] != 20 { // SSH_MSG_KEXINIT, the cookie
		return nil
	}
	w := wire{b: payload[17:], ok: true}
	w.str() // kex algorithms
	w.str() // host key algorithms
	enc := w.str()
	if !w.ok || len(enc) == 0 {
		return nil
	}
	return strings.Split(string(enc), ",")
}

// recorder keeps every byte read through it, up to maxPeek.
type recorder struct {
	r   net.Conn
	buf []byte
}

func (r *recorder) Read(b []byte) (int, error) {
	if len(r.buf) >= maxPeek {
		return 0, errors.New("read ahead enough")
	}
	b = b[:min(len(b), maxPeek-len(r.buf))]
	n, err := r.r.Read(b)
	r.buf = append(r.buf, b[:n]...)
	return n, err
}

// peekedConn replays what was read ahead, then reads on; its first write,
// x/crypto's version line, is dropped when it is the line sent already.
type peekedConn struct {
	net.Conn
	mu     sync.Mutex
	replay []byte
	skip   []byte
	wrote  bool
}

func (p *peekedConn) Read(b []byte) (int, error) {
	p.mu.Lock()
	if len(p.replay) > 0 {
		n := copy(b, p.replay)
		p.replay = p.replay[n:]
		if len(p.replay) == 0 {
			p.replay = nil
		}
		p.mu.Unlock()
		return n, nil
	}
	p.mu.Unlock()
	return p.Conn.Read(b)
}

func (p *peekedConn) Write(b []byte) (int, error) {
	p.mu.Lock()
	first := !p.wrote
	p.wrote = true
	p.mu.Unlock()
	if first && p.skip != nil && bytes.Equal(b, p.skip) {
		return len(b), nil
	}
	return p.Conn.Write(b)
}
