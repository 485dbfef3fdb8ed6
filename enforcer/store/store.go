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
	"strings"
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
type Store struct {
	db  *bolt.DB
	dir string
}

// Open opens (creating if needed) the index in dir/index.db.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open recording index: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "index.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
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
	return &Store{db: db, dir: dir}, nil
}

// Close closes the index.
func (s *Store) Close() error { return s.db.Close() }

// Put inserts or replaces a session's entry.
func (s *Store) Put(sess *Session) error {
	b, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Put([]byte(sess.ID), b)
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
