package ruleset

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Store holds the daemon's active ruleset and the outcome of the last
// attempt to replace it. Current is a single atomic load, cheap enough for
// every new connection; every method is safe for concurrent use.
//
// A reload is atomic: connections that already hold a Match keep the
// ruleset they matched against; new ones see the new ruleset. A failed
// reload leaves the active ruleset in place and its diagnostics visible
// in Status.
type Store struct {
	cur atomic.Pointer[Ruleset]
	mu  sync.Mutex
	st  Status
}

// Status is the Store's history in brief.
type Status struct {
	// Generation counts successful swaps; 0 means nothing is loaded.
	Generation uint64
	// Source and Loaded say where the active ruleset came from and when.
	Source string
	Loaded time.Time
	// Digest is the active ruleset's Digest.
	Digest string
	// LastError is set when the most recent attempt failed: it holds that
	// attempt's source, time and diagnostics (or signature error). A
	// successful swap clears it.
	LastError *LoadError
}

// LoadError is a rejected ruleset.
type LoadError struct {
	Source      string
	At          time.Time
	Diagnostics hcl.Diagnostics // nil when Err is set
	Files       map[string]*hcl.File
	Err         error // a read or signature error
}

// NewStore returns a Store holding rs as generation 1, or an empty Store
// (Current returns nil: callers must fail closed) when rs is nil.
func NewStore(rs *Ruleset, source string) *Store {
	s := &Store{}
	if rs != nil {
		s.Swap(rs, source)
	}
	return s
}

// Current returns the active ruleset, or nil if none was ever loaded.
func (s *Store) Current() *Ruleset { return s.cur.Load() }

// Swap makes rs the active ruleset and returns its generation.
func (s *Store) Swap(rs *Ruleset, source string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur.Store(rs)
	s.st.Generation++
	s.st.Source, s.st.Loaded, s.st.Digest, s.st.LastError = source, time.Now(), rs.Digest(), nil
	return s.st.Generation
}

// Reject records a failed attempt; the active ruleset stays.
func (s *Store) Reject(e *LoadError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.At.IsZero() {
		e.At = time.Now()
	}
	s.st.LastError = e
}

// Status returns a copy of the Store's status.
func (s *Store) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// Load parses files and swaps the result in if it has no errors, or
// records the rejection. It returns the diagnostics either way (warnings
// included) and whether the swap happened.
func (s *Store) Load(files map[string][]byte, source string) (bool, hcl.Diagnostics) {
	rs, parsed, diags := parse(files)
	if diags.HasErrors() {
		s.Reject(&LoadError{Source: source, Diagnostics: diags, Files: parsed})
		return false, diags
	}
	s.Swap(rs, source)
	return true, diags
}
