package ssh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// SFTP version 3's wire (draft-ietf-secsh-filexfer-02, which OpenSSH
// speaks, with OpenSSH's extensions from its PROTOCOL file): the packet
// types, status codes and open flags Sluice reads, and the framing.
// pkg/sftp keeps its codec to itself, so Sluice reads packets with this
// one, which knows the few fields a decision needs and passes everything
// else through as it came.

const (
	fxpInit          = 1
	fxpVersion       = 2
	fxpOpen          = 3
	fxpClose         = 4
	fxpRead          = 5
	fxpWrite         = 6
	fxpLstat         = 7
	fxpFstat         = 8
	fxpSetstat       = 9
	fxpFsetstat      = 10
	fxpOpendir       = 11
	fxpReaddir       = 12
	fxpRemove        = 13
	fxpMkdir         = 14
	fxpRmdir         = 15
	fxpRealpath      = 16
	fxpStat          = 17
	fxpRename        = 18
	fxpReadlink      = 19
	fxpSymlink       = 20
	fxpStatus        = 101
	fxpHandle        = 102
	fxpData          = 103
	fxpName          = 104
	fxpAttrs         = 105
	fxpExtended      = 200
	fxpExtendedReply = 201
)

const (
	fxOK               = 0
	fxEOF              = 1
	fxPermissionDenied = 3
	fxFailure          = 4
	fxBadMessage       = 5
	fxOpUnsupported    = 8
)

const (
	fxfRead   = 0x01
	fxfWrite  = 0x02
	fxfAppend = 0x04
	fxfCreat  = 0x08
	fxfTrunc  = 0x10
	fxfExcl   = 0x20
)

// sftpVersion is the version Sluice speaks on both sides.
const sftpVersion = 3

// maxSFTPPacket bounds one packet's length field, either way: OpenSSH's
// sftp-server takes up to 256 KiB (SFTP_MAX_MSG_LENGTH) and advertises
// reads and writes that fill it; a little more is allowed for other
// clients' headers.
const maxSFTPPacket = 256<<10 + 1024

// sftpExtensions are the extensions Sluice passes on from the host's
// VERSION, by what their request carries. Any other is removed from the
// VERSION the job gets and refused if asked for anyway.
var sftpExtensions = map[string]bool{
	"posix-rename@openssh.com": true, // oldpath, newpath: a rename
	"hardlink@openssh.com":     true, // oldpath, newpath: a link
	"statvfs@openssh.com":      true, // path: a stat
	"fstatvfs@openssh.com":     true, // handle
	"fsync@openssh.com":        true, // handle
	"lsetstat@openssh.com":     true, // path, attrs: a setstat
	"limits@openssh.com":       true, // nothing
	"expand-path@openssh.com":  true, // path, resolved as REALPATH is
}

// errSFTPTooLong is a packet longer than maxSFTPPacket.
type errSFTPTooLong int

func (e errSFTPTooLong) Error() string {
	return fmt.Sprintf("an SFTP packet of %d bytes (the limit is %d)", int(e), maxSFTPPacket)
}

// errSFTPMalformed is a packet whose fields do not parse.
var errSFTPMalformed = errors.New("a malformed SFTP packet")

// frameReader reads whole SFTP packets (the 4-byte length and what it
// counts) into one buffer that grows to the largest packet seen.
type frameReader struct {
	r          io.Reader
	buf        []byte
	start, end int
}

func newFrameReader(r io.Reader) *frameReader {
	return &frameReader{r: r, buf: make([]byte, 64<<10)}
}

// ready reports whether a whole packet is buffered, so that next returns
// without reading.
func (f *frameReader) ready() bool {
	n := f.end - f.start
	return n >= 4 && n >= 4+int(binary.BigEndian.Uint32(f.buf[f.start:]))
}

// next returns the next packet, length included. It stays valid until
// the next call.
func (f *frameReader) next() ([]byte, error) {
	for {
		need := 4
		if n := f.end - f.start; n >= 4 {
			l := binary.BigEndian.Uint32(f.buf[f.start:])
			if l > maxSFTPPacket {
				return nil, errSFTPTooLong(l)
			}
			need = 4 + int(l)
			if n >= need {
				p := f.buf[f.start : f.start+need]
				f.start += need
				return p, nil
			}
		}
		if f.start == f.end {
			f.start, f.end = 0, 0
		}
		if len(f.buf)-f.start < need {
			nb := f.buf
			if len(nb) < need {
				nb = make([]byte, max(need, 2*len(f.buf)))
			}
			f.end = copy(nb, f.buf[f.start:f.end])
			f.buf, f.start = nb, 0
		}
		n, err := f.r.Read(f.buf[f.end:])
		f.end += n
		if n == 0 && err != nil {
			if err == io.EOF && f.end > f.start {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// wire reads fields from a packet's body.
type wire struct {
	b  []byte
	ok bool
}

func (w *wire) u32() uint32 {
	if !w.ok || len(w.b) < 4 {
		w.ok = false
		return 0
	}
	v := binary.BigEndian.Uint32(w.b)
	w.b = w.b[4:]
	return v
}

func (w *wire) u64() uint64 {
	if !w.ok || len(w.b) < 8 {
		w.ok = false
		return 0
	}
	v := binary.BigEndian.Uint64(w.b)
	w.b = w.b[8:]
	return v
}

// str returns a string field's bytes, uncopied.
func (w *wire) str() []byte {
	n := w.u32()
	if !w.ok || uint64(len(w.b)) < uint64(n) {
		w.ok = false
		return nil
	}
	s := w.b[:n]
	w.b = w.b[n:]
	return s
}

// The attribute flags of SFTP version 3's ATTRS.
const (
	attrSize      = 0x00000001
	attrUIDGID    = 0x00000002
	attrPerm      = 0x00000004
	attrACModTime = 0x00000008
	attrExtended  = 0x80000000
)

// sftpMaxRequest is the longest request passed to the host, its length
// field included: OpenSSH's sftp-server ends the session at a longer one
// (SFTP_MAX_MSG_LENGTH is 256 KiB).
const sftpMaxRequest = 4 + 256<<10

// attrs reads an ATTRS structure. It returns the permission bits when
// the structure sets them, or -1; flags version 3 does not define make
// it malformed.
func (w *wire) attrs() int64 {
	flags := w.u32()
	if flags&^(attrSize|attrUIDGID|attrPerm|attrACModTime|attrExtended) != 0 {
		w.ok = false
	}
	perm := int64(-1)
	if flags&attrSize != 0 {
		w.u64()
	}
	if flags&attrUIDGID != 0 {
		w.u32()
		w.u32()
	}
	if flags&attrPerm != 0 {
		perm = int64(w.u32())
	}
	if flags&attrACModTime != 0 {
		w.u32()
		w.u32()
	}
	if flags&attrExtended != 0 {
		// Each pair takes at least 8 bytes, so the packet's length bounds
		// the loop.
		for n := w.u32(); n > 0 && w.ok; n-- {
			w.str()
			w.str()
		}
	}
	if !w.ok {
		return -1
	}
	return perm
}

// end says whether every field read and nothing is left over.
func (w *wire) end() bool { return w.ok && len(w.b) == 0 }

// packet builds one SFTP packet.
type packet []byte

func newPacket(typ byte, id uint32, size int) packet {
	p := make(packet, 4, 4+1+4+size)
	p = append(p, typ)
	return binary.BigEndian.AppendUint32(p, id)
}

func (p packet) u32(v uint32) packet { return binary.BigEndian.AppendUint32(p, v) }

func (p packet) str(s string) packet { return append(p.u32(uint32(len(s))), s...) }

func (p packet) raw(b []byte) packet { return append(p, b...) }

// done fills in the length.
func (p packet) done() []byte {
	binary.BigEndian.PutUint32(p, uint32(len(p)-4))
	return p
}

// statusPacket is an SSH_FXP_STATUS answer.
func statusPacket(id, code uint32, msg string) []byte {
	return newPacket(fxpStatus, id, 16+len(msg)).u32(code).str(msg).str("en").done()
}

// resolvePath makes a path the job sent absolute and clean, as the
// host's sftp-server would resolve it against home (the session's
// directory; symbolic links aside), so that the ruleset and the host see
// the same path. A path with a NUL byte is refused: the host reads it as
// a C string and would stop there, at a path the ruleset did not see.
func resolvePath(home string, p []byte) (string, error) {
	s := string(p)
	if strings.IndexByte(s, 0) >= 0 {
		return "", errors.New("a path with a NUL byte")
	}
	if !strings.HasPrefix(s, "/") {
		s = home + "/" + s
	}
	return path.Clean(s), nil
}

// openText describes an open for the recording: its path, its flags,
// and the mode it asks a new file to have, if any.
func openText(p string, flags uint32, perm int64) string {
	var fl []string
	for _, x := range []struct {
		bit  uint32
		name string
	}{{fxfRead, "read"}, {fxfWrite, "write"}, {fxfAppend, "append"}, {fxfCreat, "create"}, {fxfTrunc, "trunc"}, {fxfExcl, "excl"}} {
		if flags&x.bit != 0 {
			fl = append(fl, x.name)
		}
	}
	if perm >= 0 {
		fl = append(fl, fmt.Sprintf("mode %04o", perm&0o7777))
	}
	return "open " + p + " (" + strings.Join(fl, ",") + ")"
}
