package ssh

import (
	"bytes"
	"encoding/binary"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/decoder"
)

// The SFTP relay's property: whatever the job sends, no request reaches
// the host that names, as the host reads it, a path the ruleset refused,
// and no request on a handle reaches it except on a handle the host gave
// for an allowed open (a write, on one opened for writing). The host is
// played by the test: it reads each request the relay passes on as
// OpenSSH's sftp-server does (paths as C strings, relative to the home
// directory) and answers it.

const relayHome = "/home/deploy"

// refusedPath is the test's ruleset: nothing under /etc.
func refusedPath(p string) bool { return p == "/etc" || strings.HasPrefix(p, "/etc/") }

// hostView is where the host's sftp-server would act for a path field.
func hostView(dir string, b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	if !strings.HasPrefix(s, "/") {
		s = dir + "/" + s
	}
	return path.Clean(s)
}

// fakeHost checks and answers what the relay passes on.
type fakeHost struct {
	t       *testing.T
	handles map[string]uint32 // handle -> open flags (^0: a directory)
	n       int
}

func (h *fakeHost) answer(t *testing.T, p []byte) []byte {
	if int(binary.BigEndian.Uint32(p)) != len(p)-4 {
		t.Fatalf("a packet passed on with a wrong length: % x", p)
	}
	typ := p[4]
	w := wire{b: p[5:], ok: true}
	id := w.u32()
	var ext string
	if typ == fxpExtended {
		ext = string(w.str())
	}
	check := func(fields ...[]byte) {
		for _, f := range fields {
			if v := hostView(relayHome, f); refusedPath(v) {
				t.Fatalf("request type %d %q reached the host for %s", typ, ext, v)
			}
		}
	}
	ok := statusPacket(id, fxOK, "")
	switch {
	case typ == fxpOpen, typ == fxpOpendir:
		f := w.str()
		flags := uint32(^uint32(0))
		if typ == fxpOpen {
			flags = w.u32()
			w.attrs()
		}
		if !w.end() {
			t.Fatalf("a malformed open passed on: % x", p)
		}
		check(f)
		// As OpenSSH's sftp-server, the lowest free slot names the handle,
		// so a closed handle's name comes back for the next open.
		for n := 0; ; n++ {
			key := "h" + string(rune('a'+n%26)) + strings.Repeat("x", n/26)
			if _, used := h.handles[key]; !used {
				h.handles[key] = flags
				return newPacket(fxpHandle, id, 8).str(key).done()
			}
		}
	case typ == fxpRead, typ == fxpWrite, typ == fxpClose, typ == fxpFstat, typ == fxpFsetstat, typ == fxpReaddir,
		ext == "fsync@openssh.com", ext == "fstatvfs@openssh.com":
		key := string(w.str())
		switch typ {
		case fxpRead:
			w.u64()
			w.u32()
		case fxpWrite:
			w.u64()
			w.str()
		case fxpFsetstat:
			w.attrs()
		}
		if !w.end() {
			t.Fatalf("a malformed request on a handle passed on: % x", p)
		}
		flags, known := h.handles[key]
		if !known {
			t.Fatalf("request type %d %q on handle %q, which the host never gave", typ, ext, key)
		}
		switch {
		case typ == fxpWrite && (flags == ^uint32(0) || flags&(fxfWrite|fxfAppend|fxfCreat|fxfTrunc) == 0):
			t.Fatalf("a write on handle %q, opened with flags %#x", key, flags)
		case typ == fxpRead:
			return newPacket(fxpData, id, 8).str("data").done()
		case typ == fxpClose:
			delete(h.handles, key)
		}
		return ok
	case typ == fxpSymlink:
		target, link := w.str(), w.str()
		check(link)
		check([]byte(hostView(path.Dir(hostView(relayHome, link)), target)))
	case typ == fxpRename, ext == "posix-rename@openssh.com", ext == "hardlink@openssh.com":
		check(w.str(), w.str())
	case ext == "limits@openssh.com":
	case ext == "expand-path@openssh.com":
		f := w.str()
		if !bytes.HasPrefix(f, []byte("/")) {
			t.Fatalf("expand-path passed on with %q, which the host would expand", f)
		}
		check(f)
	case typ == fxpLstat, typ == fxpStat, typ == fxpSetstat, typ == fxpRemove, typ == fxpMkdir, typ == fxpRmdir, typ == fxpReadlink,
		typ == fxpRealpath, ext == "statvfs@openssh.com", ext == "lsetstat@openssh.com":
		check(w.str())
		if typ == fxpSetstat || typ == fxpMkdir || ext == "lsetstat@openssh.com" {
			w.attrs()
		}
	default:
		t.Fatalf("request type %d %q passed on", typ, ext)
	}
	if !w.end() {
		t.Fatalf("a malformed request passed on: % x", p)
	}
	return ok
}

// newTestRelay is a relay that decides by refusedPath, started as if the
// host had said relayHome.
func newTestRelay(t *testing.T, out io.Writer) (*sftpRelay, *[]string) {
	var decided []string
	r := &sftpRelay{
		home: relayHome,
		decide: func(op, p, target, text string) (*decoder.Command, string) {
			decided = append(decided, text)
			if refusedPath(p) || refusedPath(target) {
				return &decoder.Command{}, "sluice: " + text + " denied by rule test"
			}
			return &decoder.Command{}, ""
		},
		done: func(*decoder.Command, time.Time, int64, string) {},
	}
	r.init(out)
	return r, &decided
}

// relayAll feeds a stream of the job's packets through the relay and the
// fake host, and returns the answers the job got from Sluice itself.
func relayAll(t *testing.T, stream []byte) [][]byte {
	var out bytes.Buffer
	r, _ := newTestRelay(t, &out)
	host := &fakeHost{t: t, handles: map[string]uint32{}}
	fr := newFrameReader(bytes.NewReader(stream))
	var answers [][]byte
	for {
		p, err := fr.next()
		if err != nil {
			return answers
		}
		fwd, reply, err := r.request(p, func() error { return nil })
		if err != nil {
			return answers
		}
		if fwd != nil && reply != nil {
			t.Fatal("a request both passed on and answered")
		}
		if reply != nil {
			answers = append(answers, reply)
		}
		if fwd != nil {
			if err := r.response(host.answer(t, fwd)); err != nil {
				t.Fatalf("the relay refused the host's answer: %v", err)
			}
		}
	}
}

// Request builders for the seeds and the cases.

func reqPath(typ byte, id uint32, paths ...string) []byte {
	p := newPacket(typ, id, 64)
	for _, s := range paths {
		p = p.str(s)
	}
	if typ == fxpSetstat || typ == fxpMkdir {
		p = p.u32(0)
	}
	return p.done()
}

func reqOpen(id uint32, name string, flags uint32) []byte {
	return newPacket(fxpOpen, id, 64).str(name).u32(flags).u32(0).done()
}

func reqHandle(typ byte, id uint32, handle string, rest ...byte) []byte {
	return newPacket(typ, id, 64).str(handle).raw(rest).done()
}

func reqExt(id uint32, name string, fields ...string) []byte {
	p := newPacket(fxpExtended, id, 64).str(name)
	for _, s := range fields {
		p = p.str(s)
	}
	return p.done()
}

func reqWrite(id uint32, handle, data string) []byte {
	return newPacket(fxpWrite, id, 64).str(handle).raw(make([]byte, 8)).str(data).done()
}

func joinPackets(ps ...[]byte) []byte { return bytes.Join(ps, nil) }

func FuzzSFTPRelay(f *testing.F) {
	f.Add(joinPackets(reqOpen(1, "/etc/shadow", fxfRead), reqOpen(2, "a.txt", fxfWrite|fxfCreat), reqWrite(3, "hb", "x"), reqHandle(fxpRead, 4, "hb", make([]byte, 12)...), reqHandle(fxpClose, 5, "hb")))
	f.Add(joinPackets(reqPath(fxpStat, 1, "../../etc/passwd"), reqPath(fxpRemove, 2, "/etc/passwd\x00/../../tmp/x"), reqPath(fxpRename, 3, "x", "/etc/cron.d/x")))
	f.Add(joinPackets(reqPath(fxpSymlink, 1, "../../../etc", "link"), reqExt(2, "hardlink@openssh.com", "/etc/passwd", "p"), reqExt(3, "copy-data", "ha")))
	f.Add(joinPackets(reqOpen(1, "r", fxfRead), reqWrite(2, "hb", "x"), reqPath(fxpOpendir, 3, "/"), reqHandle(fxpRead, 4, "hc", make([]byte, 12)...), reqExt(5, "lsetstat@openssh.com", "/etc/x")))
	f.Add(joinPackets(reqPath(fxpMkdir, 1, "etc/../../../../etc/x"), reqPath(fxpSetstat, 1, "/etc"), []byte{0, 0, 0, 1, 99}))
	f.Fuzz(func(t *testing.T, stream []byte) {
		relayAll(t, stream)
	})
}

// TestSFTPRelayRequests: the cases the property covers, each with the
// answer the job gets.
func TestSFTPRelayRequests(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    []byte
		codes []uint32 // the status codes Sluice answered, in order
	}{
		{"refused by path", joinPackets(reqOpen(1, "/etc/shadow", fxfRead), reqPath(fxpStat, 2, "/etc")), []uint32{fxPermissionDenied, fxPermissionDenied}},
		{"relative paths resolved", joinPackets(reqPath(fxpStat, 1, "../../etc/passwd"), reqPath(fxpLstat, 2, "x/../../../etc"), reqPath(fxpStat, 3, "ok")), []uint32{fxPermissionDenied, fxPermissionDenied}},
		{"a NUL in a path", joinPackets(reqPath(fxpRemove, 1, "/etc/passwd\x00/../../tmp/x"), reqOpen(2, "a\x00b", fxfRead)), []uint32{fxBadMessage, fxBadMessage}},
		{"rename and links both ways", joinPackets(reqPath(fxpRename, 1, "x", "/etc/cron.d/x"), reqExt(2, "posix-rename@openssh.com", "/etc/passwd", "p"),
			reqExt(3, "hardlink@openssh.com", "/etc/passwd", "p"), reqPath(fxpSymlink, 4, "../../etc", "link"), reqPath(fxpSymlink, 5, "rel", "/etc/l")),
			[]uint32{fxPermissionDenied, fxPermissionDenied, fxPermissionDenied, fxPermissionDenied, fxPermissionDenied}},
		{"handles", joinPackets(reqWrite(1, "hz", "x"), reqOpen(2, "r", fxfRead), reqWrite(3, "ha", "x"), reqHandle(fxpRead, 4, "ha", make([]byte, 12)...),
			reqPath(fxpOpendir, 5, "."), reqHandle(fxpRead, 6, "hb", make([]byte, 12)...), reqHandle(fxpClose, 7, "ha"), reqHandle(fxpRead, 8, "ha", make([]byte, 12)...)),
			[]uint32{fxFailure, fxPermissionDenied, fxFailure, fxFailure}},
		{"names resolved are decided", joinPackets(reqPath(fxpRealpath, 1, "../../etc"), reqExt(2, "expand-path@openssh.com", "~/../../etc/x"),
			reqExt(3, "expand-path@openssh.com", "~root/x"), reqExt(4, "expand-path@openssh.com", "~/ok"), reqPath(fxpRealpath, 5, ".")),
			[]uint32{fxPermissionDenied, fxPermissionDenied, fxPermissionDenied}},
		{"fields missing or left over", joinPackets(reqPath(fxpStat, 1, "ok", "extra"), newPacket(fxpOpen, 2, 16).str("ok").u32(fxfRead).done(),
			newPacket(fxpRead, 3, 16).str("ha").u32(0).done(), newPacket(fxpSetstat, 4, 16).str("ok").u32(0x40).done(),
			newPacket(fxpMkdir, 5, 16).str("ok").u32(attrExtended).u32(1).str("a").done(), reqOpen(6, "ok", fxfRead)),
			[]uint32{fxBadMessage, fxBadMessage, fxBadMessage, fxBadMessage, fxBadMessage}},
		{"unknown requests", joinPackets(reqExt(1, "copy-data", "ha"), reqExt(2, "home-directory", "root"), newPacket(99, 3, 0).done()), []uint32{fxOpUnsupported, fxOpUnsupported, fxOpUnsupported}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answers := relayAll(t, tc.in)
			var codes []uint32
			for _, a := range answers {
				if a[4] != fxpStatus {
					t.Fatalf("Sluice answered with packet type %d", a[4])
				}
				w := wire{b: a[9:], ok: true}
				codes = append(codes, w.u32())
				if msg := string(w.str()); !strings.HasPrefix(msg, "sluice: ") {
					t.Errorf("answer %q does not say it is Sluice's", msg)
				}
			}
			if !slicesEqual(codes, tc.codes) {
				t.Errorf("answers %v, want %v", codes, tc.codes)
			}
		})
	}
}

func slicesEqual(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSFTPRelayClosedHandle: once the job sends CLOSE, the handle is
// gone for it, before the host answers: the host gives the freed name to
// the next open, so a request on the old handle would act on another file.
func TestSFTPRelayClosedHandle(t *testing.T) {
	r, _ := newTestRelay(t, io.Discard)
	nop := func() error { return nil }
	step := func(p []byte) (fwd, reply []byte) {
		t.Helper()
		fwd, reply, err := r.request(p, nop)
		if err != nil {
			t.Fatal(err)
		}
		return fwd, reply
	}
	if fwd, _ := step(reqOpen(1, "mine", fxfRead)); fwd == nil {
		t.Fatal("open refused")
	}
	if err := r.response(newPacket(fxpHandle, 1, 8).str("h0").done()); err != nil {
		t.Fatal(err)
	}
	if fwd, _ := step(reqHandle(fxpClose, 2, "h0")); fwd == nil {
		t.Fatal("close refused")
	}
	// The CLOSE is unanswered; the job opens another file for writing,
	// which the host names h0 again once it has closed the first.
	if fwd, _ := step(reqOpen(3, "theirs", fxfWrite)); fwd == nil {
		t.Fatal("second open refused")
	}
	for _, p := range [][]byte{reqHandle(fxpFsetstat, 4, "h0", 0, 0, 0, 0), reqWrite(5, "h0", "x"), reqHandle(fxpClose, 6, "h0")} {
		if fwd, reply := step(p); fwd != nil || reply == nil {
			t.Fatalf("request type %d on a closed handle was passed on", p[4])
		}
	}
	if err := r.response(statusPacket(2, fxOK, "")); err != nil {
		t.Fatal(err)
	}
	if err := r.response(newPacket(fxpHandle, 3, 8).str("h0").done()); err != nil {
		t.Fatalf("the host's reuse of a closed handle's name: %v", err)
	}
	if fwd, _ := step(reqWrite(7, "h0", "x")); fwd == nil {
		t.Fatal("a write on the new handle was refused")
	}
}

// TestSFTPRelayBounds: the requests in flight and the handles open are
// capped, and an id already in flight is refused.
func TestSFTPRelayBounds(t *testing.T) {
	r, _ := newTestRelay(t, io.Discard)
	nop := func() error { return nil }
	for i := range maxSFTPPending {
		if fwd, _, err := r.request(reqPath(fxpRealpath, uint32(i), "."), nop); fwd == nil || err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if _, reply, _ := r.request(reqPath(fxpRealpath, maxSFTPPending, "."), nop); reply == nil {
		t.Fatal("a request over the cap was passed on")
	}
	r, _ = newTestRelay(t, io.Discard)
	if _, reply, _ := r.request(reqPath(fxpRealpath, 7, "."), nop); reply != nil {
		t.Fatal("refused")
	}
	if _, reply, _ := r.request(reqPath(fxpRealpath, 7, "."), nop); reply == nil {
		t.Fatal("an id in flight was passed on again")
	}
	r, _ = newTestRelay(t, io.Discard)
	for i := range maxSFTPHandles {
		if fwd, _, err := r.request(reqOpen(uint32(i), "f", fxfRead), nop); fwd == nil || err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
	}
	if _, reply, _ := r.request(reqOpen(maxSFTPHandles, "f", fxfRead), nop); reply == nil {
		t.Fatal("an open over the handle cap was passed on")
	}
}

// TestFrameReader: packets come whole whatever the reads' sizes, and a
// packet over the limit is an error.
func TestFrameReader(t *testing.T) {
	var stream []byte
	var want [][]byte
	for _, n := range []int{1, 5, 70000, 300, maxSFTPPacket, 9} {
		p := binary.BigEndian.AppendUint32(nil, uint32(n))
		p = append(p, bytes.Repeat([]byte{byte(n)}, n)...)
		want = append(want, p)
		stream = append(stream, p...)
	}
	fr := newFrameReader(&oneByteReader{r: bytes.NewReader(stream), every: 7})
	for i, w := range want {
		p, err := fr.next()
		if err != nil || !bytes.Equal(p, w) {
			t.Fatalf("packet %d: %d bytes, %v", i, len(p), err)
		}
	}
	if _, err := fr.next(); err != io.EOF {
		t.Fatalf("end: %v", err)
	}
	fr = newFrameReader(bytes.NewReader(binary.BigEndian.AppendUint32(nil, maxSFTPPacket+1)))
	if _, err := fr.next(); err == nil {
		t.Fatal("a packet over the limit was read")
	}
}

// oneByteReader returns short reads: one byte on every every-th read.
type oneByteReader struct {
	r     io.Reader
	every int
	n     int
}

func (o *oneByteReader) Read(b []byte) (int, error) {
	o.n++
	if o.n%o.every == 0 && len(b) > 1 {
		b = b[:1]
	}
	return o.r.Read(b)
}
