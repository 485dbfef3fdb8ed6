package ssh

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/ruleset"
)

// SFTP is relayed packet by packet. Sluice reads each of the job's
// requests and decides every one that names a file by the ruleset
// (sftp.op, sftp.path); a refused one is answered by Sluice with a
// permission error and never reaches the host. What is passed on carries
// its paths made absolute and clean, as the ruleset saw them. Requests on
// a handle go on only for a handle the host gave this channel for an
// open the ruleset allowed, and writes only on one opened for writing.
// A request Sluice does not know is answered as unsupported. The host's
// answers come back as they are, read for the recording: the handles,
// the bytes read and written, and each decided operation's outcome.
// OpenSSH's scp (9.x) speaks SFTP too, so scp transfers are decided file
// by file here.

// maxSFTPPending bounds the requests in flight on one channel (OpenSSH's
// sftp keeps up to 64, pkg/sftp's client 64 per file).
const maxSFTPPending = 1024

// maxSFTPHandles bounds the handles open on one channel.
const maxSFTPHandles = 256

// sftpFlushAt is the size of each direction's write buffer: packets that
// arrive together are sent together, in as few SSH packets as they fill.
const sftpFlushAt = 64 << 10

// sftp relays an allowed sftp subsystem between the job's channel and
// the host's.
func (sc *sessChan) sftp(c *decoder.Command, up ssh.Channel, upReqs <-chan *ssh.Request) {
	s := sc.s
	defer close(sc.relayDone)
	start := time.Now()
	go ssh.DiscardRequests(upReqs)
	go io.Copy(sc.ch.Stderr(), up.Stderr())
	r := &sftpRelay{
		decide: func(op, p, target, text string) (*decoder.Command, string) {
			c := s.command(ruleset.SSHSubsystem, text, reqInfo{channel: sc.num, unmaskable: "SFTP file data"}, func(r *ruleset.SSHRequest) {
				sc.fill(r)
				r.Subsystem, r.SFTPOp, r.SFTPPath, r.SFTPTarget = "sftp", op, p, target
			})
			if !s.allowed(c, func(_, msg string) { sc.notice(msg) }) {
				msg := refusal(c)
				sc.notice(msg)
				return c, msg
			}
			return c, ""
		},
		done: func(c *decoder.Command, start time.Time, bytes int64, code string) {
			s.sess.Done(&c.Cmd, c.Verdict, enforcer.Outcome{Bytes: bytes, Duration: time.Since(start), ErrCode: code,
				Fields: map[string]string{"channel": sc.num}})
		},
	}
	err := r.run(sc.ch, up)
	status, code := uint32(0), ""
	if err != nil {
		sc.notice("sluice: sftp ended: " + err.Error())
		status, code = 255, "exit 255"
	}
	sc.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	sc.ch.CloseWrite()
	sc.ch.Close()
	up.Close()
	r.wait()
	s.sess.Done(&c.Cmd, c.Verdict, enforcer.Outcome{Bytes: r.total, Duration: time.Since(start), ErrCode: code,
		Fields: map[string]string{"channel": sc.st.channel}})
}

// sftpRelay is one sftp channel's state: the requests in flight and the
// handles open, both bounded.
type sftpRelay struct {
	// decide decides one operation; it returns the refusal the job is
	// told, or "". It may wait on a hold.
	decide func(op, path, target, text string) (*decoder.Command, string)
	// done records a decided operation's outcome.
	done func(c *decoder.Command, start time.Time, bytes int64, code string)

	home string // the directory relative paths start from

	// job is the writer towards the job, shared by the host's answers and
	// Sluice's own.
	jobMu sync.Mutex
	job   *bufio.Writer

	mu      sync.Mutex
	pending map[uint32]sftpPending
	handles map[string]*sftpHandle
	opening int           // opens in flight
	total   int64         // file bytes read and written
	drained chan struct{} // closed once nothing is in flight, after the job's end

	loops sync.WaitGroup // the two relaying goroutines, once run started them
}

// sftpPending is a request in flight.
type sftpPending struct {
	typ   byte
	c     *decoder.Command // a decided operation, or nil
	start time.Time
	h     *sftpHandle // the handle a request is on
	n     int64       // a write's bytes
	open  *sftpHandle // what an open's handle will be
}

// sftpHandle is a handle the host gave for an allowed open.
type sftpHandle struct {
	key         string
	c           *decoder.Command
	start       time.Time
	path        string
	dir         bool
	read, write bool
	n           int64
	code        string // the first error on it
}

// run speaks SFTP's start to both sides, then relays until the job ends
// its side and the host has answered, or either fails. It returns why it
// failed, or nil.
func (r *sftpRelay) run(job io.ReadWriter, host io.ReadWriter) error {
	r.init(job)
	jr, hr := newFrameReader(job), newFrameReader(host)
	hw := bufio.NewWriterSize(host, sftpFlushAt)
	if err := r.start(jr, hr, hw); err != nil {
		return err
	}
	hostDone, clientDone := make(chan error, 1), make(chan error, 1)
	r.loops.Add(2)
	go func() {
		defer r.loops.Done()
		hostDone <- r.hostLoop(hr)
	}()
	go func() {
		defer r.loops.Done()
		clientDone <- r.clientLoop(jr, hw)
	}()
	select {
	case err := <-clientDone:
		if err != nil {
			return err
		}
		// The job is done. Once the host has answered everything in
		// flight (a client waits for its answers before it ends, so usually
		// nothing is), the channel ends without waiting for the host's
		// sftp-server to exit.
		r.mu.Lock()
		if len(r.pending) > 0 {
			r.drained = make(chan struct{})
		}
		drained := r.drained
		r.mu.Unlock()
		if drained != nil {
			select {
			case <-drained:
			case err := <-hostDone:
				if err == nil {
					err = errors.New("the host's sftp subsystem ended with requests unanswered")
				}
				return err
			}
		}
		// Only now, with every answer delivered: OpenSSH's sftp-server
		// exits at the end of its input without reading what it has
		// buffered.
		if c, ok := host.(interface{ CloseWrite() error }); ok {
			c.CloseWrite()
		}
		return nil
	case err := <-hostDone:
		if err == nil {
			err = errors.New("the host's sftp subsystem ended first")
		}
		return err
	}
}

// init readies the relay's state, with job as the writer towards the job.
func (r *sftpRelay) init(job io.Writer) {
	r.pending = map[uint32]sftpPending{}
	r.handles = map[string]*sftpHandle{}
	r.job = bufio.NewWriterSize(job, sftpFlushAt)
}

// wait waits for both sides to end (the caller closed both channels)
// and records what was open or in flight then.
func (r *sftpRelay) wait() {
	r.loops.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, h := range r.handles {
		r.done(h.c, h.start, h.n, "not closed")
	}
	for _, p := range r.pending {
		switch {
		case p.typ == fxpClose:
			r.done(p.h.c, p.h.start, p.h.n, "not closed")
		case p.c != nil:
			r.done(p.c, p.start, 0, "no answer")
		}
	}
	r.handles, r.pending = nil, nil
}

// start reads the job's INIT, starts the host's side itself, learns the
// session's directory, and answers the job with the host's VERSION
// without the extensions Sluice does not read.
func (r *sftpRelay) start(jr, hr *frameReader, hw *bufio.Writer) error {
	p, err := jr.next()
	if err != nil {
		return fmt.Errorf("the job's sftp did not start: %w", err)
	}
	if len(p) < 9 || p[4] != fxpInit {
		return errors.New("the job's sftp did not start with SSH_FXP_INIT")
	}
	if v := (&wire{b: p[5:], ok: true}).u32(); v < sftpVersion {
		return fmt.Errorf("the job's sftp speaks SFTP version %d; Sluice relays version %d", v, sftpVersion)
	}
	hw.Write(newPacket(fxpInit, sftpVersion, 0).done())
	if err := hw.Flush(); err != nil {
		return err
	}
	p, err = hr.next()
	if err != nil || len(p) < 9 || p[4] != fxpVersion {
		return fmt.Errorf("the host's sftp subsystem did not answer SSH_FXP_INIT (%v)", err)
	}
	w := wire{b: p[5:], ok: true}
	if v := w.u32(); v < sftpVersion {
		return fmt.Errorf("the host speaks SFTP version %d; Sluice relays version %d", v, sftpVersion)
	}
	version := newPacket(fxpVersion, sftpVersion, len(w.b))
	for len(w.b) > 0 && w.ok {
		name, data := w.str(), w.str()
		if w.ok && sftpExtensions[string(name)] {
			version = version.str(string(name)).str(string(data))
		}
	}
	if !w.ok {
		return errors.New("the host's SSH_FXP_VERSION is malformed")
	}
	hw.Write(newPacket(fxpRealpath, 0, 5).str(".").done())
	if err := hw.Flush(); err != nil {
		return err
	}
	p, err = hr.next()
	if err != nil || len(p) < 13 || p[4] != fxpName {
		return fmt.Errorf("the host's sftp subsystem did not say its directory (%v)", err)
	}
	w = wire{b: p[9:], ok: true}
	if w.u32() < 1 {
		return errors.New("the host's sftp subsystem did not say its directory")
	}
	home := w.str()
	if !w.ok || len(home) == 0 || home[0] != '/' {
		return errors.New("the host's sftp subsystem did not say its directory")
	}
	if r.home, err = resolvePath("/", home); err != nil {
		return err
	}
	r.job.Write(version.done())
	return r.job.Flush()
}

// clientLoop passes the job's requests on, or answers them. It returns
// nil at the end of the job's input.
func (r *sftpRelay) clientLoop(jr *frameReader, hw *bufio.Writer) error {
	for {
		p, err := jr.next()
		if err == io.EOF {
			return hw.Flush()
		}
		if err != nil {
			return err
		}
		fwd, reply, err := r.request(p, hw.Flush)
		if err != nil {
			return err
		}
		if fwd != nil {
			if _, err := hw.Write(fwd); err != nil {
				return err
			}
		}
		if reply != nil {
			if err := r.toJob(reply, true); err != nil {
				return err
			}
		}
		if !jr.ready() {
			if err := hw.Flush(); err != nil {
				return err
			}
		}
	}
}

// hostLoop passes the host's answers on. It returns nil at the end of
// the host's output.
func (r *sftpRelay) hostLoop(hr *frameReader) error {
	for {
		p, err := hr.next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := r.response(p); err != nil {
			return err
		}
		r.mu.Lock()
		drained := r.drained != nil && len(r.pending) == 0
		r.mu.Unlock()
		if err := r.toJob(p, drained || !hr.ready()); err != nil {
			return err
		}
		if drained {
			r.mu.Lock()
			close(r.drained)
			r.drained = nil
			r.mu.Unlock()
		}
	}
}

func (r *sftpRelay) toJob(p []byte, flush bool) error {
	r.jobMu.Lock()
	defer r.jobMu.Unlock()
	if _, err := r.job.Write(p); err != nil {
		return err
	}
	if flush {
		return r.job.Flush()
	}
	return nil
}

// request reads one of the job's requests. It returns the packet to pass
// to the host (p itself, or p with its paths resolved), or the answer to
// give the job instead, or why the channel must end. flush sends what is
// queued for the host before a decision that may wait on a hold. Every
// field a request carries is read, and a request with a field missing,
// malformed or left over is answered as a bad message: what the host
// reads is what the ruleset saw.
func (r *sftpRelay) request(p []byte, flush func() error) (fwd, reply []byte, err error) {
	if len(p) < 9 {
		return nil, nil, errSFTPMalformed
	}
	typ := p[4]
	w := wire{b: p[5:], ok: true}
	id := w.u32()
	fail := func(code uint32, msg string) ([]byte, []byte, error) {
		return nil, statusPacket(id, code, msg), nil
	}
	r.mu.Lock()
	_, dup := r.pending[id]
	full := len(r.pending) >= maxSFTPPending
	r.mu.Unlock()
	switch {
	case typ == fxpInit || typ == fxpVersion:
		return nil, nil, errors.New("a second SSH_FXP_INIT")
	case dup:
		return fail(fxFailure, "sluice: request id "+strconv.FormatUint(uint64(id), 10)+" is already in flight")
	case full:
		return fail(fxFailure, "sluice: too many SFTP requests in flight")
	case len(p) > sftpMaxRequest:
		return fail(fxFailure, "sluice: an SFTP request over 256 KiB")
	}
	pend := sftpPending{typ: typ}
	var ext string
	if typ == fxpExtended {
		ext = string(w.str())
		if !w.ok || !sftpExtensions[ext] {
			return fail(fxOpUnsupported, "sluice: SFTP extension not relayed")
		}
	}
	malformed := func() ([]byte, []byte, error) {
		return fail(fxBadMessage, "sluice: a malformed SFTP request")
	}
	// The fields that follow: a path resolved against the session's
	// directory, or a handle this channel holds.
	var paths []string
	var nulPath bool
	path1 := func() {
		f := w.str()
		if !w.ok {
			return
		}
		rp, err := resolvePath(r.home, f)
		if err != nil {
			nulPath = true
			rp = ""
		}
		paths = append(paths, rp)
	}
	var h *sftpHandle
	handle := func() {
		key := w.str()
		if !w.ok {
			return
		}
		r.mu.Lock()
		h = r.handles[string(key)]
		r.mu.Unlock()
	}
	// rebuild is the request with its paths resolved and the fields after
	// them (from rest on) as they came.
	rebuild := func(rest []byte) []byte {
		q := newPacket(typ, id, len(p))
		if ext != "" {
			q = q.str(ext)
		}
		for _, s := range paths {
			q = q.str(s)
		}
		return q.raw(rest).done()
	}
	decide := func(op, p, target, text string) string {
		if err := flush(); err != nil {
			return "sluice: " + err.Error()
		}
		c, refused := r.decide(op, p, target, text)
		pend.c, pend.start = c, time.Now()
		return refused
	}
	const refusedNUL = "sluice: a path with a NUL byte is refused"

	switch {
	case typ == fxpOpen, typ == fxpOpendir:
		path1()
		rest := w.b
		op, text := "list", ""
		hd := &sftpHandle{dir: typ == fxpOpendir}
		if typ == fxpOpen {
			flags := w.u32()
			perm := w.attrs()
			hd.read = flags&fxfRead != 0
			hd.write = flags&(fxfWrite|fxfAppend|fxfCreat|fxfTrunc) != 0
			op = "read"
			if hd.write {
				op = "write"
			}
			if w.ok && len(paths) == 1 {
				text = openText(paths[0], flags, perm)
			}
		}
		switch {
		case !w.end():
			return malformed()
		case nulPath:
			return fail(fxBadMessage, refusedNUL)
		}
		hd.path = paths[0]
		if text == "" {
			text = "list " + hd.path
		}
		r.mu.Lock()
		busy := len(r.handles)+r.opening >= maxSFTPHandles
		r.mu.Unlock()
		if busy {
			return fail(fxFailure, "sluice: too many SFTP handles open")
		}
		if msg := decide(op, hd.path, "", text); msg != "" {
			return fail(fxPermissionDenied, msg)
		}
		hd.c, hd.start = pend.c, pend.start
		pend.open = hd
		fwd = rebuild(rest)

	case typ == fxpClose, typ == fxpFstat, typ == fxpReaddir, typ == fxpRead, typ == fxpWrite, typ == fxpFsetstat,
		ext == "fstatvfs@openssh.com", ext == "fsync@openssh.com":
		handle()
		var n int64
		switch typ {
		case fxpRead:
			w.u64()
			w.u32()
		case fxpWrite:
			w.u64()
			n = int64(len(w.str()))
		case fxpFsetstat:
			w.attrs()
		}
		if !w.end() {
			return malformed()
		}
		if h == nil {
			return fail(fxFailure, "sluice: not a handle this channel has open")
		}
		pend.h, pend.n = h, n
		switch {
		case typ == fxpReaddir && !h.dir, (typ == fxpRead || typ == fxpWrite || ext == "fsync@openssh.com") && h.dir:
			return fail(fxFailure, "sluice: the wrong kind of handle")
		case typ == fxpRead && !h.read:
			return fail(fxPermissionDenied, "sluice: "+h.path+" was not opened for reading")
		case typ == fxpWrite && !h.write:
			return fail(fxPermissionDenied, "sluice: "+h.path+" was not opened for writing")
		case typ == fxpFsetstat:
			if msg := decide("setstat", h.path, "", "setstat "+h.path); msg != "" {
				return fail(fxPermissionDenied, msg)
			}
		}
		fwd = p

	case typ == fxpLstat, typ == fxpStat, typ == fxpSetstat, typ == fxpRemove, typ == fxpMkdir, typ == fxpRmdir, typ == fxpReadlink,
		typ == fxpRealpath, ext == "statvfs@openssh.com", ext == "lsetstat@openssh.com":
		path1()
		rest := w.b
		if typ == fxpSetstat || typ == fxpMkdir || ext == "lsetstat@openssh.com" {
			w.attrs()
		}
		switch {
		case !w.end():
			return malformed()
		case nulPath:
			return fail(fxBadMessage, refusedNUL)
		}
		op := map[byte]string{fxpLstat: "stat", fxpStat: "stat", fxpSetstat: "setstat", fxpRemove: "remove",
			fxpMkdir: "mkdir", fxpRmdir: "rmdir", fxpReadlink: "readlink", fxpRealpath: "stat"}[typ]
		switch ext {
		case "statvfs@openssh.com":
			op = "stat"
		case "lsetstat@openssh.com":
			op = "setstat"
		}
		if msg := decide(op, paths[0], "", op+" "+paths[0]); msg != "" {
			return fail(fxPermissionDenied, msg)
		}
		fwd = rebuild(rest)

	case ext == "expand-path@openssh.com":
		// A leading ~ or ~/ is the session's directory; ~user is someone
		// else's, whose path Sluice does not know, so it is refused.
		f := w.str()
		if !w.end() {
			return malformed()
		}
		if len(f) > 0 && f[0] == '~' {
			if len(f) > 1 && f[1] != '/' {
				return fail(fxPermissionDenied, "sluice: ~user paths are not relayed")
			}
			f = f[1:]
			if len(f) > 0 {
				f = f[1:]
			}
		}
		rp, err := resolvePath(r.home, f)
		if err != nil {
			return fail(fxBadMessage, refusedNUL)
		}
		paths = append(paths, rp)
		if msg := decide("stat", rp, "", "stat "+rp); msg != "" {
			return fail(fxPermissionDenied, msg)
		}
		fwd = rebuild(nil)

	case typ == fxpRename, ext == "posix-rename@openssh.com", ext == "hardlink@openssh.com":
		path1()
		path1()
		switch {
		case !w.end():
			return malformed()
		case nulPath:
			return fail(fxBadMessage, refusedNUL)
		}
		from, to := paths[0], paths[1]
		msg := ""
		if ext == "hardlink@openssh.com" {
			// The new name is the operation's path; what it links to, its
			// target.
			msg = decide("link", to, from, "link "+to+" -> "+from)
		} else {
			msg = decide("rename", from, to, "rename "+from+" -> "+to)
		}
		if msg != "" {
			return fail(fxPermissionDenied, msg)
		}
		fwd = rebuild(nil)

	case typ == fxpSymlink:
		// OpenSSH's sftp-server reads the target first and the link's
		// name second (its PROTOCOL file, section 4.1). The target is
		// stored as the job wrote it, so a relative one stays relative;
		// the ruleset sees where it points from the link's directory.
		target := w.str()
		path1()
		switch {
		case !w.end():
			return malformed()
		case nulPath || bytesHasNUL(target):
			return fail(fxBadMessage, refusedNUL)
		}
		link := paths[0]
		to, _ := resolvePath(path.Dir(link), target)
		if msg := decide("symlink", link, to, "symlink "+link+" -> "+to); msg != "" {
			return fail(fxPermissionDenied, msg)
		}
		fwd = newPacket(typ, id, len(p)).str(string(target)).str(link).done()

	case ext == "limits@openssh.com":
		if !w.end() {
			return malformed()
		}
		fwd = p

	default:
		return fail(fxOpUnsupported, "sluice: SFTP request type "+strconv.Itoa(int(typ))+" is not relayed")
	}
	if len(fwd) > sftpMaxRequest {
		// Resolving its paths made it longer than the host takes.
		if pend.c != nil {
			r.done(pend.c, pend.start, 0, "too long")
		}
		return fail(fxFailure, "sluice: an SFTP request over 256 KiB once its paths are resolved")
	}
	r.mu.Lock()
	if pend.open != nil {
		r.opening++
	}
	if typ == fxpClose {
		// The handle is closed from here on: the host may give its name
		// to the next open, and nothing more may go on the old one.
		delete(r.handles, h.key)
	}
	r.pending[id] = pend
	r.mu.Unlock()
	return fwd, nil, nil
}

func bytesHasNUL(b []byte) bool {
	for _, c := range b {
		if c == 0 {
			return true
		}
	}
	return false
}

// response reads one of the host's answers for the recording.
func (r *sftpRelay) response(p []byte) error {
	if len(p) < 9 {
		return errSFTPMalformed
	}
	typ := p[4]
	w := wire{b: p[5:], ok: true}
	id := w.u32()
	r.mu.Lock()
	defer r.mu.Unlock()
	pend, ok := r.pending[id]
	if !ok {
		return fmt.Errorf("the host answered request %d, which it was not sent", id)
	}
	delete(r.pending, id)
	code := ""
	if typ == fxpStatus {
		if c := w.u32(); c != fxOK && !(c == fxEOF && (pend.typ == fxpRead || pend.typ == fxpReaddir)) {
			code = "sftp " + strconv.FormatUint(uint64(c), 10)
		}
	}
	switch {
	case pend.open != nil:
		r.opening--
		h := pend.open
		if typ != fxpHandle {
			if code == "" {
				code = "sftp: no handle"
			}
			r.done(h.c, h.start, 0, code)
			return nil
		}
		key := w.str()
		if !w.ok {
			return errSFTPMalformed
		}
		if _, dup := r.handles[string(key)]; dup {
			return errors.New("the host gave a handle that is already open")
		}
		h.key = string(key)
		r.handles[h.key] = h
	case pend.typ == fxpClose:
		h := pend.h
		if h.code == "" {
			h.code = code
		}
		r.done(h.c, h.start, h.n, h.code)
	case pend.typ == fxpRead:
		if typ == fxpData {
			n := int64(len(w.str()))
			pend.h.n += n
			r.total += n
		} else if code != "" && pend.h.code == "" {
			pend.h.code = code
		}
	case pend.typ == fxpWrite:
		if typ == fxpStatus && code == "" {
			pend.h.n += pend.n
			r.total += pend.n
		} else if pend.h.code == "" {
			pend.h.code = code
		}
	case pend.c != nil:
		r.done(pend.c, pend.start, 0, code)
	}
	return nil
}
