package record

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/sluicehq/sluice/internal/atomicfile"
)

// Header is the first frame of a recording.
type Header struct {
	Version int       `json:"version"`
	Session string    `json:"session"`
	Start   time.Time `json:"start"`
	// KeyID is KeyID of the public key that verifies the recording.
	KeyID string `json:"key_id"`
}

// Options tune a Writer. The zero value gives the defaults.
type Options struct {
	// QueueLen is how many events may wait for the writer goroutine before
	// Append blocks. Default 1024.
	QueueLen int
	// FsyncEvery is how often written events are made durable: the writer
	// appends a signed checkpoint frame and fsyncs the file, when anything
	// was written since the last time. Default 1s; negative turns the
	// timer off, leaving checkpoints and fsyncs to Sync and Close.
	FsyncEvery time.Duration
	// OnError, if set, is called once, from the writer goroutine, when
	// writing fails; Append, Flush and Sync return the same error from
	// then on. It must not call the Writer's methods. Without it, the
	// failure is seen at the next Append or at Close.
	OnError func(error)
}

const (
	defaultQueueLen   = 1024
	defaultFsyncEvery = time.Second
	bufSize           = 64 << 10
	keepBuf           = 256 << 10 // largest scratch or Data buffer kept for reuse
)

// sink is where a writer's bytes go: an *os.File, or a test double.
type sink interface {
	io.Writer
	Sync() error
	Close() error
}

// Writer appends one session's events to its recording. Append and Flush
// may be called from any number of goroutines (typically the client and
// server sides of a proxied session); events are recorded in the order
// their Appends were accepted. One background goroutine per Writer
// encodes, writes and flushes the queued events in batches, at least
// every 50 ms (sooner when the queue is half full, and at once for Flush,
// Sync and Close), and fsyncs every FsyncEvery; Close stops it. Append
// itself only queues: it wakes the goroutine only when the queue fills,
// so a proxied statement does not pay a goroutine wake-up per event. The
// caller must call Close.
type Writer struct {
	path    string
	session string
	keys    *Keys
	opts    Options

	mu sync.RWMutex // write-held by Close to set closed; read-held by senders

	// The queue: events appended and not yet taken by the writer
	// goroutine, in order. kick wakes the goroutine; drained, when a
	// sender waits for room, is closed by the goroutine when it takes
	// the queue.
	qmu     sync.Mutex
	closed  bool
	pending []*Event
	drained chan struct{}
	kick    chan struct{} // capacity 1

	failed   chan struct{} // closed when err is set
	err      error
	done     chan struct{} // closed when the goroutine has ended
	closeErr error
	written  atomic.Int64 // bytes of frames written, for Written

	// Owned by the writer goroutine.
	f        sink
	bw       *bufio.Writer
	seq      uint64
	head     [hashSize]byte
	buf      []byte
	dirty    bool // frames written since the last checkpoint
	syncDirs []string
}

var eventPool = sync.Pool{New: func() any { return new(Event) }}

// Create starts the recording of session sessionID in
// dir/YYYY-MM-DD/sessionID.rec (the UTC date), writing its header before
// returning. It does file system work (mkdir, create, one write, no
// fsync): call it while setting the session up, before its first
// statement. The file must not exist. sessionID may hold letters, digits,
// '.', '_' and '-', up to 128 bytes, and must not start with '.'.
func Create(dir, sessionID string, keys *Keys, opts Options) (*Writer, error) {
	if err := checkSessionID(sessionID); err != nil {
		return nil, fmt.Errorf("create recording: %w", err)
	}
	if keys == nil {
		return nil, errors.New("create recording: no signing keys")
	}
	start := time.Now().UTC()
	path := PathFor(dir, sessionID, start)
	day := filepath.Dir(path)
	var syncDirs []string
	if _, err := os.Stat(day); err != nil {
		syncDirs = append(syncDirs, dir) // the new day directory's entry
	}
	if err := os.MkdirAll(day, 0o750); err != nil {
		return nil, fmt.Errorf("create recording: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("create recording: %w", err)
	}
	w, err := newWriter(f, path, sessionID, keys, opts, start, append(syncDirs, day))
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("create recording: %w", err)
	}
	return w, nil
}

// newWriter writes the header to f and starts the writer goroutine.
func newWriter(f sink, path, sessionID string, keys *Keys, opts Options, start time.Time, syncDirs []string) (*Writer, error) {
	if opts.QueueLen <= 0 {
		opts.QueueLen = defaultQueueLen
	}
	if opts.FsyncEvery == 0 {
		opts.FsyncEvery = defaultFsyncEvery
	}
	w := &Writer{
		path:     path,
		session:  sessionID,
		keys:     keys,
		opts:     opts,
		kick:     make(chan struct{}, 1),
		failed:   make(chan struct{}),
		done:     make(chan struct{}),
		f:        f,
		bw:       bufio.NewWriterSize(f, bufSize),
		syncDirs: syncDirs,
	}
	hp, err := json.Marshal(Header{Version: version, Session: sessionID, Start: start, KeyID: keys.ID()})
	if err != nil {
		return nil, err
	}
	b := append([]byte(magic), appendFrameHeader(nil, hp)...)
	if _, err := f.Write(append(b, hp...)); err != nil {
		return nil, err
	}
	w.head = sha256.Sum256(hp)
	w.seq = 1
	go w.run()
	return w, nil
}

// Queued returns how many events wait for the writer goroutine: the
// recording queue's depth (Append blocks once it is full). The writer
// takes the queue in batches, so up to about 50 ms of a session's events
// wait there normally.
func (w *Writer) Queued() int {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return len(w.pending)
}

// Room returns how many more events the queue takes before Append
// blocks (backpressure).
func (w *Writer) Room() int {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	return w.opts.QueueLen - len(w.pending)
}

// Written returns how many bytes of frames the writer has written
// (buffered or on disk), header excluded. Safe to call at any time.
func (w *Writer) Written() int64 { return w.written.Load() }

// Path returns the recording's file path.
func (w *Writer) Path() string { return w.path }

// Session returns the session id.
func (w *Writer) Session() string { return w.session }

// Append queues e for recording and returns once it is queued, not
// written. It never drops an event: when the queue is full it blocks until
// there is room (backpressure), ctx is done, or writing has failed. A
// non-nil error means e was not recorded (a split TypeWire event: not
// entirely) and, unless it is ctx's error, the recording has failed for
// good. Either way the caller must end the session: fail closed.
//
// Append copies e.Data, so the caller may reuse its buffer; it keeps
// e.Fields, which must not be modified afterwards. It sets a zero Time to
// now and ignores Seq. A TypeWire event's Data is split into events of at
// most MaxWireChunk bytes, and Text is cut to MaxText.
func (w *Writer) Append(ctx context.Context, e Event) error {
	switch e.Type {
	case "":
		return errors.New("append event: no type")
	case TypeCheckpoint, TypeSeal:
		return fmt.Errorf("append event: type %q is written by the writer only", e.Type)
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	if len(e.Text) > MaxText {
		i := MaxText
		for i > 0 && !utf8.RuneStart(e.Text[i]) {
			i--
		}
		e.Text, e.TextBytes = e.Text[:i], int64(len(e.Text))
	}
	data := e.Data
	for {
		chunk := data
		if e.Type == TypeWire && len(chunk) > MaxWireChunk {
			chunk = chunk[:MaxWireChunk]
		}
		data = data[len(chunk):]
		p := eventPool.Get().(*Event)
		buf := p.Data[:0]
		*p = e
		p.Seq, p.ctl, p.ack = 0, ctlNone, nil
		p.Data = append(buf, chunk...)
		if err := w.send(ctx, p); err != nil {
			return err
		}
		if len(data) == 0 {
			return nil
		}
	}
}

// Flush waits until every event appended before it has been written to
// the operating system (surviving a crash of the daemon, not of the
// machine), or ctx is done, or writing fails.
func (w *Writer) Flush(ctx context.Context) error {
	return w.control(ctx, ctlFlush)
}

// Sync waits until every event appended before it has been written, a
// signed checkpoint appended after them, and the file fsynced, or ctx is
// done, or writing fails. The writer does this by itself every FsyncEvery.
func (w *Writer) Sync(ctx context.Context) error {
	return w.control(ctx, ctlSync)
}

func (w *Writer) control(ctx context.Context, c control) error {
	p := &Event{ctl: c, ack: make(chan struct{})}
	if err := w.send(ctx, p); err != nil {
		return err
	}
	select {
	case <-p.ack:
		return nil
	case <-w.failed:
		return w.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *Writer) send(ctx context.Context, p *Event) error {
	select {
	case <-w.failed:
		return w.err
	default:
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	w.qmu.Lock()
	if w.closed {
		w.qmu.Unlock()
		return ErrClosed
	}
	for len(w.pending) >= w.opts.QueueLen { // full: wait for the writer
		if w.drained == nil {
			w.drained = make(chan struct{})
		}
		drained := w.drained
		w.qmu.Unlock()
		w.wake()
		select {
		case <-drained:
		case <-w.failed:
			return w.err
		case <-ctx.Done():
			return ctx.Err()
		}
		w.qmu.Lock()
	}
	// Read what is needed of p before it is queued: once the lock is
	// released the writer may take it, write it and return it to the
	// pool, where another Append reuses it.
	ctl := p.ctl
	w.pending = append(w.pending, p)
	n := len(w.pending)
	w.qmu.Unlock()
	if ctl != ctlNone || n == max(w.opts.QueueLen/2, 1) {
		w.wake()
	}
	return nil
}

// wake makes the writer goroutine take the queue now.
func (w *Writer) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// take returns the queued events, leaving the queue empty (its storage is
// spare, which the caller is done with), and whether the writer is closed.
func (w *Writer) take(spare []*Event) ([]*Event, bool) {
	w.qmu.Lock()
	defer w.qmu.Unlock()
	batch := w.pending
	w.pending = spare[:0]
	if w.drained != nil {
		close(w.drained)
		w.drained = nil
	}
	return batch, w.closed
}

// Close records the events already queued, seals the recording, fsyncs and
// closes it. It waits for Appends blocked on a full queue; Appends after
// it return ErrClosed. It returns the writer's error, if writing failed at
// any point (the recording is then left unsealed). Close may be called
// more than once.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.qmu.Lock()
	w.closed = true
	w.qmu.Unlock()
	w.mu.Unlock()
	w.wake()
	<-w.done
	return w.closeErr
}

// flushEvery bounds how long a written event may sit in the writer's
// buffer before it reaches the OS (and so survives a daemon crash).
const flushEvery = 50 * time.Millisecond

func (w *Writer) run() {
	defer close(w.done)
	var tick <-chan time.Time
	if w.opts.FsyncEvery > 0 {
		t := time.NewTicker(w.opts.FsyncEvery)
		defer t.Stop()
		tick = t.C
	}
	// Written events reach the OS at least every flushEvery (and when
	// the buffer fills), not after every event: one write syscall per
	// event would cost the proxied session more than the encoding.
	flush := time.NewTicker(flushEvery)
	defer flush.Stop()
	var batch []*Event
	for {
		due := false // a sync
		select {
		case <-w.kick:
		case <-flush.C:
		case <-tick:
			due = true
		}
		var closed bool
		batch, closed = w.take(batch)
		err := w.handleAll(batch, tick)
		clear(batch)
		switch {
		case err != nil:
		case closed:
			w.closeErr = w.finish()
			return
		case due:
			err = w.sync()
		case len(batch) > 0:
			err = w.bw.Flush()
		}
		if err != nil {
			w.err = fmt.Errorf("record session %s: %w", w.session, err)
			close(w.failed)
			if w.opts.OnError != nil {
				w.opts.OnError(w.err)
			}
			w.f.Close()
			w.closeErr = w.err
			return
		}
	}
}

// handleAll writes a batch of queued events, stopping at the first
// failure. A batch can be large (a queue of wire events), so a sync that
// falls due on tick meanwhile is made between two events, as it would be
// between two batches.
func (w *Writer) handleAll(batch []*Event, tick <-chan time.Time) error {
	for _, e := range batch {
		if err := w.handle(e); err != nil {
			return err
		}
		select {
		case <-tick:
			if err := w.sync(); err != nil {
				return err
			}
		default:
		}
	}
	return nil
}

// handle writes one queued event, or acknowledges a Flush marker.
func (w *Writer) handle(e *Event) error {
	if e.ctl != ctlNone {
		var err error
		if e.ctl == ctlSync {
			err = w.sync()
		} else {
			err = w.bw.Flush()
		}
		if err == nil {
			close(e.ack)
		}
		return err
	}
	e.Seq = w.seq
	err := w.writeFrame(e)
	if cap(e.Data) > keepBuf {
		*e = Event{}
	} else {
		*e = Event{Data: e.Data[:0]}
	}
	eventPool.Put(e)
	return err
}

func (w *Writer) writeFrame(e *Event) error {
	b, h, err := appendEventFrame(w.buf[:0], &w.head, e)
	if err != nil {
		return fmt.Errorf("write event %d (%s): %w", e.Seq, e.Type, err)
	}
	if _, err := w.bw.Write(b); err != nil {
		return fmt.Errorf("write event %d: %w", e.Seq, err)
	}
	w.written.Add(int64(len(b)))
	if cap(b) <= keepBuf {
		w.buf = b
	} else {
		w.buf = nil
	}
	w.head = h
	w.seq++
	w.dirty = true
	return nil
}

// writeSigned appends a checkpoint or seal frame.
func (w *Writer) writeSigned(typ string) error {
	t := time.Now().UTC()
	e := Event{Seq: w.seq, Time: t, Type: typ}
	e.Sig = w.keys.sign(sigMessage(typ, w.session, w.seq, t, &w.head))
	return w.writeFrame(&e)
}

// sync checkpoints and fsyncs what was written since the last sync.
func (w *Writer) sync() error {
	if !w.dirty {
		return nil
	}
	if err := w.writeSigned(TypeCheckpoint); err != nil {
		return err
	}
	w.dirty = false
	return w.flushSync()
}

func (w *Writer) flushSync() error {
	if err := w.bw.Flush(); err != nil {
		return err
	}
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("fsync: %w", err)
	}
	for len(w.syncDirs) > 0 {
		if err := atomicfile.SyncDir(w.syncDirs[0]); err != nil {
			return fmt.Errorf("fsync directory: %w", err)
		}
		w.syncDirs = w.syncDirs[1:]
	}
	return nil
}

// finish seals, syncs and closes the file.
func (w *Writer) finish() error {
	err := w.writeSigned(TypeSeal)
	if err == nil {
		err = w.flushSync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("seal recording of session %s: %w", w.session, err)
	}
	return nil
}

// PathFor returns where Create puts the recording of session sessionID
// started at start: dir/YYYY-MM-DD/sessionID.rec, with start's UTC date.
func PathFor(dir, sessionID string, start time.Time) string {
	return filepath.Join(DayDir(dir, start), sessionID+".rec")
}

// DayDir is the directory under dir of the recordings of sessions started
// on t's UTC date.
func DayDir(dir string, t time.Time) string {
	return filepath.Join(dir, t.UTC().Format(time.DateOnly))
}

// Find returns the path of session sessionID's recording under dir.
func Find(dir, sessionID string) (string, error) {
	if err := checkSessionID(sessionID); err != nil {
		return "", fmt.Errorf("find recording: %w", err)
	}
	m, err := filepath.Glob(filepath.Join(dir, "*", sessionID+".rec"))
	if err != nil {
		return "", fmt.Errorf("find recording: %w", err)
	}
	switch len(m) {
	case 0:
		return "", fmt.Errorf("find recording: session %s: %w", sessionID, os.ErrNotExist)
	case 1:
		return m[0], nil
	default:
		return "", fmt.Errorf("find recording: session %s has %d recordings: %v", sessionID, len(m), m)
	}
}

// List returns the paths of every recording under dir, sorted.
func List(dir string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(dir, "*", "*.rec"))
	if err != nil {
		return nil, fmt.Errorf("list recordings: %w", err)
	}
	slices.Sort(m)
	return m, nil
}

func checkSessionID(id string) error {
	if id == "" || len(id) > 128 || id[0] == '.' {
		return fmt.Errorf("invalid session id %q", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("invalid session id %q: byte %q is not a letter, digit, '.', '_' or '-'", id, c)
		}
	}
	return nil
}
