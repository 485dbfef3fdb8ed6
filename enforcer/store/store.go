// Package store is the index of session recordings: one small record per
// session (who, where, when, how it ended, what was decided) in a bbolt
// database beside the recordings, for `sluice sessions list` and
// retention.
//
// bbolt rather than SQLite: it is pure Go (no second C library to build
// and ship), a single file, crash-safe by design (copy-on-write B+tree,
// fsync at every commit), and the queries needed here are a time-ordered
// scan with simple filters, which a sorted key space serves directly.
// Session IDs begin with their start time, so keys sort by time.
package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Status of a recorded session.
const (
	StatusActive      = "active"
	StatusSealed      = "sealed"
	StatusInterrupted = "interrupted"
)

var bucket = []byte("sessions")

// ErrNotFound is returned for an unknown session ID.
var ErrNotFound = errors.New("no such session")

// Session is one session's index entry.
type Session struct {
	ID       string    `json:"id"`
	Path     string    `json:"path"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end,omitzero"`
	Status   string    `json:"status"`
	Target   string    `json:"target"`
	Protocol string    `json:"protocol"`
	OrigDst  string    `json:"orig_dst"`
	PID      uint32    `json:"pid"`
	UID      uint32    `json:"uid"`
	Comm     string    `json:"comm"`
	Exe      string    `json:"exe,omitempty"`
	DBUser   string    `json:"db_user,omitempty"`
	// Container and Image name the container the client ran in, if any.
	Container string `json:"container,omitempty"`
	Image     string `json:"image,omitempty"`
	// Identity: the level and, when verified, the CI claims responders
	// search by.
	IdentityLevel string `json:"identity_level"`
	Repository    string `json:"repository,omitempty"`
	Ref           string `json:"ref,omitempty"`
	RunID         string `json:"run_id,omitempty"`
	Actor         string `json:"actor,omitempty"`
	Statements    int64  `json:"statements"`
	Denied        int64  `json:"denied"`
	// Verdicts are the distinct actions decided in the session.
	Verdicts []string `json:"verdicts,omitempty"`
	Bytes    int64    `json:"bytes"`
	Level    string   `json:"record_level"`
}

// Store is the open index. It is safe for concurrent use.
//
// Puts share commits (group commit): one goroutine, started by Open and
// stopped by Close, commits every Put queued while the previous commit
// was on disk in a single bbolt transaction, so concurrent sessions pay
// one pair of fdatasyncs between them instead of one pair each. Each Put
// still returns only once its own entry is durable.
type Store struct {
	db  *bolt.DB
	dir string

	// The commit queue, owned by run; mu guards pending, urgent and
	// closed. kick (capacity 1) wakes run.
	mu      sync.Mutex
	pending []*put
	urgent  bool // a Put (not a PutDeferred) is queued
	closed  bool
	kick    chan struct{}
	stopped chan struct{} // closed when run has ended
	delay   time.Duration // how long a PutDeferred may wait for company
	commits atomic.Int64  // transactions run for Puts, for tests
}

// put is one queued Put: its entry and where its commit's result goes.
type put struct {
	key, val []byte
	at       time.Time
	urgent   bool        // Put, not PutDeferred
	done     chan error  // capacity 1
	onErr    func(error) // PutAsync's
}

// DeferDelay is how long PutDeferred's entry may wait in the queue for a
// Put to share its commit.
const DeferDelay = 10 * time.Millisecond

// maxBatch bounds the entries one commit takes.
const maxBatch = 1024

// ErrClosed is returned by a Put after Close.
var ErrClosed = errors.New("recording index closed")

// Open opens (creating if needed) the index in dir/index.db.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open recording index: %w", err)
	}
	// NoFreelistSync: a commit does not write the free page list (one page
	// less per commit); bbolt rebuilds it by a scan when it opens a file
	// whose list was not written, so nothing committed is at risk.
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("open recording index: %w", err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open recording index: %w", err)
	}
	s := &Store{db: db, dir: dir, kick: make(chan struct{}, 1), stopped: make(chan struct{}), delay: DeferDelay}
	go s.run()
	return s, nil
}

// Close commits the Puts still queued, then closes the index. Puts after
// it return ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return nil
	}
	s.wake()
	<-s.stopped
	return s.db.Close()
}

// Put inserts or replaces a session's entry and returns once the entry is
// durable (committed and fdatasynced). Its commit starts as soon as the
// commit before it, if any, has ended, and takes every Put queued by then.
func (s *Store) Put(sess *Session) error { return s.enqueue(sess, true) }

// PutDeferred is Put for a writer no client waits on (a session's end):
// it also returns once the entry is durable, but its commit may wait up
// to DeferDelay for another Put to share it.
func (s *Store) PutDeferred(sess *Session) error { return s.enqueue(sess, false) }

// PutAsync is Put for a writer that goes on without waiting: sess is
// queued (encoded now, so later changes to it are not seen) in the order
// of the calls, and committed as Put's entries are; a failed commit calls
// onErr (nil: ignored) on the committer's goroutine, which it must not
// block. An entry that cannot be queued (closed, invalid) is refused at
// once.
func (s *Store) PutAsync(sess *Session, onErr func(error)) error {
	_, err := s.queue(sess, true, onErr)
	return err
}

func (s *Store) enqueue(sess *Session, urgent bool) error {
	p, err := s.queue(sess, urgent, nil)
	if err != nil {
		return err
	}
	return <-p.done
}

// queue encodes sess, queues it for the committer and wakes it.
func (s *Store) queue(sess *Session, urgent bool, onErr func(error)) (*put, error) {
	b, err := json.Marshal(sess)
	if err != nil {
		return nil, err
	}
	// What bbolt would refuse is refused here, so that one bad entry
	// cannot fail the commit it shares with others.
	switch {
	case sess.ID == "":
		return nil, bolt.ErrKeyRequired
	case len(sess.ID) > bolt.MaxKeySize:
		return nil, bolt.ErrKeyTooLarge
	case len(b) > bolt.MaxValueSize:
		return nil, bolt.ErrValueTooLarge
	}
	p := &put{key: []byte(sess.ID), val: b, at: time.Now(), urgent: urgent, done: make(chan error, 1), onErr: onErr}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.pending = append(s.pending, p)
	s.urgent = s.urgent || urgent
	s.mu.Unlock()
	s.wake()
	return p, nil
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run is the committer: it commits the queue when a Put is in it, when
// its oldest PutDeferred has waited DeferDelay, when it is full, or when
// the store is closing; then it ends once closed and empty.
func (s *Store) run() {
	defer close(s.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		s.mu.Lock()
		n, urgent, closed := len(s.pending), s.urgent, s.closed
		var due time.Time
		if n > 0 {
			due = s.pending[0].at.Add(s.delay)
		}
		s.mu.Unlock()
		var wait <-chan time.Time
		switch {
		case n == 0 && closed:
			return
		case n > 0 && (urgent || closed || n >= maxBatch || !time.Now().Before(due)):
			s.commit()
			continue
		case n > 0:
			timer.Reset(time.Until(due))
			wait = timer.C
		}
		select {
		case <-s.kick:
		case <-wait:
		}
		timer.Stop()
	}
}

// commit writes the queued entries in one transaction and tells each Put
// the outcome. When a shared commit fails, each entry is tried in a
// transaction of its own, so that every Put gets its own error.
func (s *Store) commit() {
	s.mu.Lock()
	batch := s.pending
	if len(batch) > maxBatch {
		batch = batch[:maxBatch:maxBatch]
	}
	s.pending = s.pending[len(batch):]
	s.urgent = slices.ContainsFunc(s.pending, func(p *put) bool { return p.urgent })
	s.mu.Unlock()
	err := s.putAll(batch)
	if err != nil && len(batch) > 1 {
		for _, p := range batch {
			p.finish(s.putAll([]*put{p}))
		}
		return
	}
	for _, p := range batch {
		p.finish(err)
	}
}

// finish reports a put's outcome to its waiter, or to its onErr.
func (p *put) finish(err error) {
	if err != nil && p.onErr != nil {
		p.onErr(err)
	}
	p.done <- err
}

func (s *Store) putAll(batch []*put) error {
	s.commits.Add(1)
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		for _, p := range batch {
			if err := b.Put(p.key, p.val); err != nil {
				return err
			}
		}
		return nil
	})
}

// Get returns one session. A unique prefix of an ID is accepted.
func (s *Store) Get(id string) (*Session, error) {
	var out *Session
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		k, v := c.Seek([]byte(id))
		if k == nil || !bytes.HasPrefix(k, []byte(id)) {
			return ErrNotFound
		}
		if k2, _ := c.Next(); k2 != nil && bytes.HasPrefix(k2, []byte(id)) && string(k) != id {
			return fmt.Errorf("session id prefix %q is ambiguous", id)
		}
		out = new(Session)
		return json.Unmarshal(v, out)
	})
	return out, err
}

// Filter selects sessions for List. Zero fields match everything.
type Filter struct {
	Since   time.Time
	Repo    string // exact repository claim
	RunID   string
	Target  string
	Verdict string // a session that had at least one such verdict
	Status  string
	Limit   int // newest first; 0 = no limit
}

func (f *Filter) match(s *Session) bool {
	switch {
	case !f.Since.IsZero() && s.Start.Before(f.Since):
		return false
	case f.Repo != "" && s.Repository != f.Repo:
		return false
	case f.RunID != "" && s.RunID != f.RunID:
		return false
	case f.Target != "" && s.Target != f.Target:
		return false
	case f.Status != "" && s.Status != f.Status:
		return false
	case f.Verdict != "" && !contains(s.Verdicts, f.Verdict):
		return false
	}
	return true
}

func contains(l []string, v string) bool {
	for _, x := range l {
		if strings.EqualFold(x, v) {
			return true
		}
	}
	return false
}

// List returns matching sessions, newest first.
func (s *Store) List(f Filter) ([]*Session, error) {
	var out []*Session
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucket).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var sess Session
			if err := json.Unmarshal(v, &sess); err != nil {
				return fmt.Errorf("index entry %s: %w", k, err)
			}
			if !f.Since.IsZero() && sess.Start.Before(f.Since) {
				break // keys sort by start time
			}
			if f.match(&sess) {
				out = append(out, &sess)
				if f.Limit > 0 && len(out) >= f.Limit {
					break
				}
			}
		}
		return nil
	})
	return out, err
}

// MarkInterrupted turns every session still marked active into an
// interrupted one: run at daemon start, when no session of the previous
// daemon can still be open.
func (s *Store) MarkInterrupted() (int, error) {
	n := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucket)
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			var sess Session
			if json.Unmarshal(v, &sess) != nil || sess.Status != StatusActive {
				continue
			}
			sess.Status = StatusInterrupted
			nb, _ := json.Marshal(&sess)
			if err := b.Put(k, nb); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// Retain deletes the recordings (file and entry) of finished sessions
// older than maxAge, then the oldest ones until the recordings take at
// most maxBytes. Zero disables either limit. Active sessions are kept.
func (s *Store) Retain(maxAge time.Duration, maxBytes int64) ([]string, error) {
	var all []*Session
	if err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var sess Session
			if json.Unmarshal(v, &sess) == nil {
				all = append(all, &sess)
			}
			return nil
		})
	}); err != nil {
		return nil, err
	}
	var total int64
	for _, sess := range all {
		total += fileSize(sess.Path)
	}
	var drop []*Session
	now := time.Now()
	for _, sess := range all { // oldest first: keys sort by time
		if sess.Status == StatusActive {
			continue
		}
		old := maxAge > 0 && now.Sub(sess.Start) > maxAge
		big := maxBytes > 0 && total > maxBytes
		if old || big {
			drop = append(drop, sess)
			total -= fileSize(sess.Path)
		}
	}
	var removed []string
	for _, sess := range drop {
		if err := os.Remove(sess.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return removed, fmt.Errorf("remove recording %s: %w", sess.ID, err)
		}
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(sess.ID)) }); err != nil {
			return removed, err
		}
		removed = append(removed, sess.ID)
	}
	return removed, nil
}

func fileSize(p string) int64 {
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return fi.Size()
}
