package record

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sluicehq/sluice/internal/atomicfile"
)

// Pool creates recording files ahead of need, so that a session's setup
// renames a file instead of allocating one: creating a file is the
// costliest file system call of a connection's setup (the file system
// searches for a free inode), and the pool does it on its own goroutine
// between connections.
//
// A pooled file is empty, named .pre-<random>.tmp in its day's directory
// (which List, Find and retention never look at), and opened for
// writing. Create takes one, renames it to the session's name without
// replacing anything (as Create's O_EXCL), and writes the header; every
// frame is written after the rename, so a file that has content always
// has its session's name. The pool holds at most its size, refilled after
// each take; a file of another day is removed instead of used. When the
// pool is empty or fails, Create creates the file itself, as the package
// Create does.
//
// A Pool is safe for concurrent use; Close stops it and removes its files.
type Pool struct {
	dir  string
	size int

	mu     sync.Mutex
	files  []pooled
	closed bool
	kick   chan struct{} // capacity 1
	stop   chan struct{} // closed by Close
	done   chan struct{} // closed when the filler has ended
}

type pooled struct {
	f         *os.File
	path, day string
}

// poolPrefix and poolSuffix make a pooled file's name.
const (
	poolPrefix = ".pre-"
	poolSuffix = ".tmp"
)

// NewPool starts a pool of up to size files under dir (the directory
// given to Create). It first removes the empty pooled files an earlier
// daemon left (a file with content is left for an operator to look at).
func NewPool(dir string, size int) *Pool {
	if m, err := filepath.Glob(filepath.Join(dir, "*", poolPrefix+"*"+poolSuffix)); err == nil {
		for _, path := range m {
			if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() == 0 {
				os.Remove(path)
			}
		}
	}
	p := &Pool{dir: dir, size: max(size, 1), kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go p.fill()
	p.wake()
	return p
}

// Create starts the recording of session sessionID as the package's
// Create does, with a pooled file when one of today's is ready.
func (p *Pool) Create(sessionID string, keys *Keys, opts Options) (*Writer, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("create recording: %w", err)
	}
	if keys == nil {
		return nil, errors.New("create recording: no signing keys")
	}
	start := time.Now().UTC()
	path := PathFor(p.dir, sessionID, start)
	day := filepath.Dir(path)
	pf, ok := p.take(day)
	if !ok {
		return Create(p.dir, sessionID, keys, opts)
	}
	if err := renameNoReplace(pf.path, path); err != nil {
		pf.f.Close()
		os.Remove(pf.path)
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create recording: %w", err)
		}
		return Create(p.dir, sessionID, keys, opts)
	}
	// The day's directory entry was made durable when the pool created
	// the directory; the rename is, at the recording's first sync.
	w, err := newWriter(pf.f, path, sessionID, keys, opts, start, []string{day})
	if err != nil {
		pf.f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create recording: %w", err)
	}
	return w, nil
}

// take returns a pooled file of day, dropping those of other days, and
// asks for a refill.
func (p *Pool) take(day string) (pooled, bool) {
	p.mu.Lock()
	var stale []pooled
	var got pooled
	ok := false
	for len(p.files) > 0 && !ok {
		pf := p.files[len(p.files)-1]
		p.files = p.files[:len(p.files)-1]
		if pf.day == day {
			got, ok = pf, true
		} else {
			stale = append(stale, pf)
		}
	}
	p.mu.Unlock()
	for _, pf := range stale {
		pf.f.Close()
		os.Remove(pf.path)
	}
	p.wake()
	return got, ok
}

func (p *Pool) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// fill tops the pool up on every kick until Close. A failure (a full
// disk) leaves the pool short until the next kick; Create then creates
// files itself and reports the failure.
func (p *Pool) fill() {
	defer close(p.done)
	for {
		select {
		case <-p.kick:
		case <-p.stop:
			return
		}
		for {
			p.mu.Lock()
			closed, n := p.closed, len(p.files)
			p.mu.Unlock()
			if closed {
				return
			}
			if n >= p.size {
				break
			}
			pf, err := p.create()
			if err != nil {
				break
			}
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				pf.f.Close()
				os.Remove(pf.path)
				return
			}
			p.files = append(p.files, pf)
			p.mu.Unlock()
		}
	}
}

// create makes one pooled file in today's directory, creating that (and
// making its entry durable) first when needed.
func (p *Pool) create() (pooled, error) {
	day := filepath.Join(p.dir, time.Now().UTC().Format(time.DateOnly))
	if _, err := os.Stat(day); err != nil {
		if err := os.MkdirAll(day, 0o750); err != nil {
			return pooled{}, err
		}
		if err := atomicfile.SyncDir(p.dir); err != nil {
			return pooled{}, err
		}
	}
	var b [8]byte
	rand.Read(b[:])
	path := filepath.Join(day, poolPrefix+hex.EncodeToString(b[:])+poolSuffix)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return pooled{}, err
	}
	return pooled{f: f, path: path, day: day}, nil
}

// Close stops the pool and removes the files it holds.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	files := p.files
	p.files = nil
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	for _, pf := range files {
		pf.f.Close()
		os.Remove(pf.path)
	}
	return nil
}
