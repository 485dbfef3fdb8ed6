package ssh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/ruleset"
)

// SFTP is decoded by terminating it: pkg/sftp's request server speaks to
// the job's client, and every file operation it receives is decided by
// the ruleset (sftp.op, sftp.path) and, allowed, made again on the host
// through pkg/sftp's client, on the host's sftp subsystem. pkg/sftp keeps
// its packet codec to itself, so relaying the job's packets while reading
// them is not possible without a codec of Sluice's own; terminating also
// means nothing the ruleset did not see reaches the host. OpenSSH's scp
// (9.x) speaks SFTP too, so scp transfers are decided file by file here.

// sftp serves an allowed sftp subsystem on the job's channel.
func (sc *sessChan) sftp(c *decoder.Command, up ssh.Channel, upReqs <-chan *ssh.Request) {
	s := sc.s
	defer close(sc.relayDone)
	start := time.Now()
	go ssh.DiscardRequests(upReqs)
	go io.Copy(sc.ch.Stderr(), up.Stderr())
	client, err := sftp.NewClientPipe(up, &packetWriter{w: up})
	if err != nil {
		sc.notice("sluice: the host's sftp subsystem did not answer: " + err.Error())
		up.Close()
		sc.exit(255)
		return
	}
	defer client.Close()
	home, err := client.RealPath(".")
	if err != nil {
		home = "/"
	}
	h := &sftpHandler{sc: sc, client: client}
	// The request server closes what it serves when it is done; the
	// channel must stay open for the exit status, so it gets a Close that
	// does nothing.
	rwc := struct {
		io.Reader
		io.Writer
		io.Closer
	}{sc.ch, &packetWriter{w: sc.ch}, io.NopCloser(nil)}
	srv := sftp.NewRequestServer(rwc, sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h},
		sftp.WithStartDirectory(home))
	err = srv.Serve()
	srv.Close()
	status := uint32(0)
	code := ""
	if err != nil && !errors.Is(err, io.EOF) {
		status, code = 255, "exit 255"
	}
	sc.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	sc.ch.CloseWrite()
	sc.ch.Close()
	up.Close()
	s.sess.Done(&c.Cmd, c.Verdict, enforcer.Outcome{Bytes: h.total(), Duration: time.Since(start), ErrCode: code,
		Fields: map[string]string{"channel": sc.st.channel}})
}

// sftpHandler decides and performs the job's file operations.
type sftpHandler struct {
	sc     *sessChan
	client *sftp.Client

	mu    sync.Mutex
	bytes int64
}

func (h *sftpHandler) add(n int64) {
	h.mu.Lock()
	h.bytes += n
	h.mu.Unlock()
}

func (h *sftpHandler) total() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bytes
}

// decide decides one operation; a refusal is an SFTP permission error
// naming the rule, and the same sentence on the job's stderr (OpenSSH's
// sftp and scp show the channel's stderr, not the status message).
func (h *sftpHandler) decide(op, path, target, text string) (*decoder.Command, error) {
	s := h.sc.s
	c := s.command(ruleset.SSHSubsystem, text, reqInfo{channel: h.sc.num, unmaskable: "SFTP file data"}, func(r *ruleset.SSHRequest) {
		h.sc.fill(r)
		r.Subsystem, r.SFTPOp, r.SFTPPath, r.SFTPTarget = "sftp", op, path, target
	})
	if !s.allowed(c, func(_, msg string) { h.sc.notice(msg) }) {
		msg := refusal(c)
		h.sc.notice(msg)
		return nil, fmt.Errorf("%s: %w", msg, sftp.ErrSSHFxPermissionDenied)
	}
	return c, nil
}

// done records an operation's outcome.
func (h *sftpHandler) done(c *decoder.Command, start time.Time, bytes int64, err error) {
	o := enforcer.Outcome{Bytes: bytes, Duration: time.Since(start)}
	if err != nil {
		o.ErrCode = "sftp error"
		var se *sftp.StatusError
		switch {
		case errors.As(err, &se):
			o.ErrCode = fmt.Sprintf("sftp %d", se.Code)
		case errors.Is(err, fs.ErrNotExist):
			o.ErrCode = "sftp 2" // SSH_FX_NO_SUCH_FILE, as pkg/sftp's client reports it
		case errors.Is(err, fs.ErrPermission):
			o.ErrCode = "sftp 3" // SSH_FX_PERMISSION_DENIED
		}
	}
	o.Fields = map[string]string{"channel": h.sc.num}
	h.sc.s.sess.Done(&c.Cmd, c.Verdict, o)
}

// upErr turns the host's answer into the status the job gets: the host's
// own code and message.
func upErr(err error) error {
	if err == nil {
		return nil
	}
	var se *sftp.StatusError
	if errors.As(err, &se) {
		return fmt.Errorf("%s: %w", err, se.FxCode())
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%s: %w", err, sftp.ErrSSHFxPermissionDenied)
	}
	return err
}

// openText describes an open for the recording: its path and flags.
func openText(path string, f sftp.FileOpenFlags) string {
	var fl []string
	for _, x := range []struct {
		on   bool
		name string
	}{{f.Read, "read"}, {f.Write, "write"}, {f.Append, "append"}, {f.Creat, "create"}, {f.Trunc, "trunc"}, {f.Excl, "excl"}} {
		if x.on {
			fl = append(fl, x.name)
		}
	}
	return "open " + path + " (" + strings.Join(fl, ",") + ")"
}

func osFlags(f sftp.FileOpenFlags) int {
	var fl int
	switch {
	case f.Read && f.Write:
		fl = os.O_RDWR
	case f.Write:
		fl = os.O_WRONLY
	default:
		fl = os.O_RDONLY
	}
	if f.Append {
		fl |= os.O_APPEND
	}
	if f.Creat {
		fl |= os.O_CREATE
	}
	if f.Trunc {
		fl |= os.O_TRUNC
	}
	if f.Excl {
		fl |= os.O_EXCL
	}
	return fl
}

// open decides and opens a file on the host for the job's handle.
func (h *sftpHandler) open(r *sftp.Request) (*hostFile, error) {
	flags := r.Pflags()
	if r.Method == "Get" {
		flags = sftp.FileOpenFlags{Read: true}
	}
	// Rules tell reads from writes by the operation: an open that may
	// change the file (write, append, create, truncate) is a write.
	op := "read"
	if flags.Write || flags.Append || flags.Creat || flags.Trunc {
		op = "write"
	}
	c, err := h.decide(op, r.Filepath, "", openText(r.Filepath, flags))
	if err != nil {
		return nil, err
	}
	start := time.Now()
	// O_APPEND would make WriteAt fail in pkg/sftp's client; the job's
	// own offsets are honoured, as a server without append does.
	fl := osFlags(flags) &^ os.O_APPEND
	f, err := h.client.OpenFile(r.Filepath, fl)
	if err != nil {
		h.done(c, start, 0, err)
		return nil, upErr(err)
	}
	return &hostFile{h: h, f: f, c: c, start: start}, nil
}

// Fileread serves reads.
func (h *sftpHandler) Fileread(r *sftp.Request) (io.ReaderAt, error) { return h.open(r) }

// Filewrite serves writes.
func (h *sftpHandler) Filewrite(r *sftp.Request) (io.WriterAt, error) { return h.open(r) }

// OpenFile serves opens for reading and writing.
func (h *sftpHandler) OpenFile(r *sftp.Request) (sftp.WriterAtReaderAt, error) { return h.open(r) }

// hostFile is a file open on the host for one of the job's handles.
type hostFile struct {
	h     *sftpHandler
	f     *sftp.File
	c     *decoder.Command
	start time.Time

	mu    sync.Mutex
	n     int64
	err   error
	close sync.Once
}

func (f *hostFile) count(n int, err error) {
	f.mu.Lock()
	f.n += int64(n)
	if err != nil && err != io.EOF && f.err == nil {
		f.err = err
	}
	f.mu.Unlock()
	f.h.add(int64(n))
}

func (f *hostFile) ReadAt(b []byte, off int64) (int, error) {
	n, err := f.f.ReadAt(b, off)
	f.count(n, err)
	if err == io.EOF {
		return n, err
	}
	return n, upErr(err)
}

func (f *hostFile) WriteAt(b []byte, off int64) (int, error) {
	n, err := f.f.WriteAt(b, off)
	f.count(n, err)
	return n, upErr(err)
}

// Close closes the host's file and records the handle's bytes.
func (f *hostFile) Close() error {
	var err error
	f.close.Do(func() {
		err = f.f.Close()
		f.mu.Lock()
		n, ferr := f.n, f.err
		f.mu.Unlock()
		if ferr == nil {
			ferr = err
		}
		f.h.done(f.c, f.start, n, ferr)
	})
	return upErr(err)
}

// Filecmd serves the operations that change the host's files.
func (h *sftpHandler) Filecmd(r *sftp.Request) error {
	var op, path, target, text string
	switch r.Method {
	case "Setstat":
		op, path, text = "setstat", r.Filepath, "setstat "+r.Filepath
	case "Rename", "PosixRename":
		op, path, target, text = "rename", r.Filepath, r.Target, "rename "+r.Filepath+" -> "+r.Target
	case "Rmdir":
		op, path, text = "rmdir", r.Filepath, "rmdir "+r.Filepath
	case "Mkdir":
		op, path, text = "mkdir", r.Filepath, "mkdir "+r.Filepath
	case "Link":
		op, path, target, text = "link", r.Target, r.Filepath, "link "+r.Target+" -> "+r.Filepath
	case "Symlink":
		op, path, target, text = "symlink", r.Target, r.Filepath, "symlink "+r.Target+" -> "+r.Filepath
	case "Remove":
		op, path, text = "remove", r.Filepath, "remove "+r.Filepath
	default:
		return sftp.ErrSSHFxOpUnsupported
	}
	c, err := h.decide(op, path, target, text)
	if err != nil {
		return err
	}
	start := time.Now()
	switch r.Method {
	case "Setstat":
		err = h.setstat(r)
	case "Rename":
		err = h.client.Rename(r.Filepath, r.Target)
	case "PosixRename":
		err = h.client.PosixRename(r.Filepath, r.Target)
	case "Rmdir":
		err = h.client.RemoveDirectory(r.Filepath)
	case "Mkdir":
		err = h.client.Mkdir(r.Filepath)
	case "Link":
		err = h.client.Link(r.Filepath, r.Target)
	case "Symlink":
		err = h.client.Symlink(r.Filepath, r.Target)
	case "Remove":
		err = h.client.Remove(r.Filepath)
	}
	h.done(c, start, 0, err)
	return upErr(err)
}

// PosixRename serves posix-rename@openssh.com.
func (h *sftpHandler) PosixRename(r *sftp.Request) error { return h.Filecmd(r) }

func (h *sftpHandler) setstat(r *sftp.Request) error {
	a, fl := r.Attributes(), r.AttrFlags()
	if fl.Size {
		if err := h.client.Truncate(r.Filepath, int64(a.Size)); err != nil {
			return err
		}
	}
	if fl.UidGid {
		if err := h.client.Chown(r.Filepath, int(a.UID), int(a.GID)); err != nil {
			return err
		}
	}
	if fl.Permissions {
		if err := h.client.Chmod(r.Filepath, fs.FileMode(a.Mode&0o7777)); err != nil {
			return err
		}
	}
	if fl.Acmodtime {
		if err := h.client.Chtimes(r.Filepath, time.Unix(int64(a.Atime), 0), time.Unix(int64(a.Mtime), 0)); err != nil {
			return err
		}
	}
	return nil
}

// Filelist serves directory listings and stat.
func (h *sftpHandler) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	switch r.Method {
	case "List":
		c, err := h.decide("list", r.Filepath, "", "list "+r.Filepath)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		fis, err := h.client.ReadDir(r.Filepath)
		h.done(c, start, 0, err)
		if err != nil {
			return nil, upErr(err)
		}
		return lister(fis), nil
	case "Stat":
		return h.stat("stat", r.Filepath, h.client.Stat)
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

// Lstat serves lstat.
func (h *sftpHandler) Lstat(r *sftp.Request) (sftp.ListerAt, error) {
	return h.stat("stat", r.Filepath, h.client.Lstat)
}

func (h *sftpHandler) stat(op, path string, fn func(string) (os.FileInfo, error)) (sftp.ListerAt, error) {
	c, err := h.decide(op, path, "", op+" "+path)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	fi, err := fn(path)
	h.done(c, start, 0, err)
	if err != nil {
		return nil, upErr(err)
	}
	return lister{fi}, nil
}

// RealPath resolves a path on the host. It reveals no file content and
// is what every client asks first, so it is not decided.
func (h *sftpHandler) RealPath(p string) (string, error) {
	rp, err := h.client.RealPath(p)
	return rp, upErr(err)
}

// Readlink serves readlink.
func (h *sftpHandler) Readlink(p string) (string, error) {
	c, err := h.decide("readlink", p, "", "readlink "+p)
	if err != nil {
		return "", err
	}
	start := time.Now()
	t, err := h.client.ReadLink(p)
	h.done(c, start, 0, err)
	return t, upErr(err)
}

// lister serves a listing already read.
type lister []os.FileInfo

func (l lister) ListAt(out []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if off+int64(n) >= int64(len(l)) {
		return n, io.EOF
	}
	return n, nil
}

// maxCoalesce is the largest SFTP packet packetWriter gathers.
const maxCoalesce = 64 << 10

// packetWriter gathers each SFTP packet into one Write. pkg/sftp writes a
// packet as its header then its data, two writes that the SSH channel
// would send as two SSH packets, each encrypted, MACed and written to the
// socket on its own. It follows the stream's framing (a 4-byte length,
// then that many bytes) whatever the writes' sizes; a packet larger than
// maxCoalesce is passed through as it comes.
type packetWriter struct {
	w    io.Writer
	buf  []byte // the packet gathered so far
	want int    // its size, once its length is known
	pass int    // bytes of a large packet still to pass through
}

func (p *packetWriter) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 {
		if p.pass > 0 {
			k := min(p.pass, len(b))
			if _, err := p.w.Write(b[:k]); err != nil {
				return total - len(b), err
			}
			p.pass -= k
			b = b[k:]
			continue
		}
		if len(p.buf) == 0 && len(b) >= 4 {
			// A whole packet in hand is written from b, uncopied.
			if n := 4 + int(binary.BigEndian.Uint32(b)); n <= len(b) && n <= maxCoalesce {
				if _, err := p.w.Write(b[:n]); err != nil {
					return total - len(b), err
				}
				b = b[n:]
				continue
			}
		}
		if len(p.buf) < 4 {
			k := min(4-len(p.buf), len(b))
			p.buf = append(p.buf, b[:k]...)
			b = b[k:]
			if len(p.buf) < 4 {
				break
			}
			p.want = 4 + int(binary.BigEndian.Uint32(p.buf))
			if p.want > maxCoalesce {
				_, err := p.w.Write(p.buf)
				p.pass, p.buf, p.want = p.want-4, p.buf[:0], 0
				if err != nil {
					return total - len(b), err
				}
				continue
			}
		}
		k := min(p.want-len(p.buf), len(b))
		p.buf = append(p.buf, b[:k]...)
		b = b[k:]
		if len(p.buf) == p.want {
			_, err := p.w.Write(p.buf)
			p.buf, p.want = p.buf[:0], 0
			if err != nil {
				return total - len(b), err
			}
		}
	}
	return total, nil
}

// Close closes the writer beneath.
func (p *packetWriter) Close() error {
	if c, ok := p.w.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
