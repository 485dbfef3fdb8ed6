package s3

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer/store"
)

// Default backoff of an Uploader's retries.
const (
	DefaultMinBackoff = time.Second
	DefaultMaxBackoff = 5 * time.Minute
)

// Uploader uploads sealed recordings in the background, one at a time,
// retrying each failed upload with exponential backoff until it succeeds
// or the Uploader stops. Enqueue never waits on the store, so a session
// never does. Nothing local is deleted: the recording stays on disk
// (and under the recording block's retention) whether or not it was
// uploaded.
//
// With Dir set, the queue is persistent: Enqueue writes a small file
// Dir/ID.json (the index entry) before it returns, the file is removed
// once the store has acknowledged the upload, and Resume, at the next
// start, queues again every recording whose file is still there.
//
// An Uploader is safe for concurrent use. Run owns the work; whoever
// calls Run cancels its context to stop it.
type Uploader struct {
	b   *Bucket
	pub ed25519.PublicKey
	log hclog.Logger
	// MinBackoff and MaxBackoff bound the wait before a failed upload is
	// tried again; zero values take the defaults. Set before Run.
	MinBackoff, MaxBackoff time.Duration
	// Uploaded, when set, is called after each successful upload (from
	// Run's goroutine) with the sidecar and the delay from the session's
	// end to the store's acknowledgement. Each upload is also logged.
	Uploaded func(sc *Sidecar, delay time.Duration)
	// Dir, when set (before Enqueue, Resume and Run), holds the
	// persistent queue: one file per recording not yet acknowledged.
	Dir string
	// Checkpoint, when positive, is how often Run uploads a checkpoint
	// of every session Active returns (set both before Run).
	Checkpoint time.Duration
	Active     func() []store.Session

	mu       sync.Mutex
	resumed  int // queued again by Resume
	cpDone   int64
	cpFailed int64
	// checkpointed are the sessions with a checkpoint in the store, to
	// delete once sealed (Run's alone; bounded by the sessions open or
	// pending).
	checkpointed map[string]bool
	pending      []*job
	failed       int64 // failed tries, ever
	done         int64 // uploads, ever
	wake         chan struct{}
	// changed is closed (and replaced) whenever an upload succeeds or
	// fails, for Flush.
	changed chan struct{}
}

type job struct {
	sess  store.Session
	tries int
	next  time.Time // not before
}

// NewUploader returns an Uploader to b of recordings verified by pub.
func NewUploader(b *Bucket, pub ed25519.PublicKey, log hclog.Logger) *Uploader {
	return &Uploader{b: b, pub: pub, log: log, wake: make(chan struct{}, 1), changed: make(chan struct{})}
}

// Enqueue adds a sealed session (a copy of sess is taken) and returns
// without waiting on the store. With Dir set, it first writes the
// session's queue file (a few hundred bytes, fsynced); a failure to write
// it is logged and the upload is queued in memory all the same.
func (u *Uploader) Enqueue(sess *store.Session) {
	if u.Dir != "" {
		if err := u.writeQueued(sess); err != nil {
			u.log.Error("the upload queue file could not be written; the upload is queued in memory only and is lost if sluiced stops before it is done", "session", sess.ID, "error", err)
		}
	}
	u.enqueue(sess)
}

func (u *Uploader) enqueue(sess *store.Session) {
	u.mu.Lock()
	u.pending = append(u.pending, &job{sess: *sess})
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// UploaderStats counts an Uploader's work.
type UploaderStats struct {
	// Pending is how many recordings wait for upload (or a retry).
	Pending int `json:"pending"`
	// Uploaded and FailedTries count since the Uploader was made.
	Uploaded    int64 `json:"uploaded"`
	FailedTries int64 `json:"failed_tries"`
	// Resumed is how many recordings Resume queued again from the
	// persistent queue (pending when the previous daemon stopped).
	Resumed int `json:"resumed"`
	// Checkpoints and CheckpointFailures count checkpoints of active
	// sessions uploaded and failed.
	Checkpoints        int64 `json:"checkpoints"`
	CheckpointFailures int64 `json:"checkpoint_failures"`
}

// Stats returns the Uploader's counters now.
func (u *Uploader) Stats() UploaderStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return UploaderStats{Pending: len(u.pending), Uploaded: u.done, FailedTries: u.failed, Resumed: u.resumed, Checkpoints: u.cpDone, CheckpointFailures: u.cpFailed}
}

// Run uploads until ctx is done. It returns ctx's error.
func (u *Uploader) Run(ctx context.Context) error {
	minB, maxB := u.MinBackoff, u.MaxBackoff
	if minB <= 0 {
		minB = DefaultMinBackoff
	}
	if maxB < minB {
		maxB = max(DefaultMaxBackoff, minB)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var nextCheckpoint time.Time
	if u.Checkpoint > 0 && u.Active != nil {
		nextCheckpoint = time.Now().Add(u.Checkpoint)
	}
	for {
		if !nextCheckpoint.IsZero() && !time.Now().Before(nextCheckpoint) {
			u.checkpoints(ctx)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			nextCheckpoint = time.Now().Add(u.Checkpoint)
		}
		j, wait := u.due()
		if !nextCheckpoint.IsZero() {
			wait = min(wait, time.Until(nextCheckpoint))
		}
		if j == nil {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-u.wake:
			case <-timer.C:
			}
			continue
		}
		log := u.log.With("session", j.sess.ID)
		tctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		sc, err := u.b.Put(tctx, &j.sess, u.pub)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil && u.checkpointed[j.sess.ID] {
			// Run alone uploads checkpoints, so none of this session
			// can land after this delete. Sessions never checkpointed
			// need no delete (which on a versioned bucket would leave a
			// delete marker). Done before the upload is counted, so that
			// Stats' Uploaded means the store holds the final state.
			delete(u.checkpointed, j.sess.ID)
			tctx, cancel := context.WithTimeout(ctx, time.Minute)
			if err := u.b.DeleteCheckpoint(tctx, j.sess.ID); err != nil && ctx.Err() == nil {
				log.Warn("deleting the session's checkpoint from the store failed; it stays under active/", "error", err)
			}
			cancel()
		}
		u.mu.Lock()
		if err != nil {
			u.failed++
			j.tries++
			back := minB << min(j.tries-1, 20)
			if back > maxB || back <= 0 {
				back = maxB
			}
			j.next = time.Now().Add(back)
			u.notifyLocked()
			u.mu.Unlock()
			log.Warn("uploading the recording failed; will retry", "store", u.b.String(), "tries", j.tries, "retry_in", back, "error", err)
			continue
		}
		u.done++
		if u.Dir != "" {
			if err := os.Remove(u.queueFile(j.sess.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
				log.Error("removing the upload queue file failed; the next start uploads the recording again", "error", err)
			}
		}
		for i, p := range u.pending {
			if p == j {
				u.pending = append(u.pending[:i], u.pending[i+1:]...)
				break
			}
		}
		u.notifyLocked()
		u.mu.Unlock()
		delay := time.Since(j.sess.End)
		log.Info("recording uploaded", "store", u.b.String(), "bytes", sc.Size, "tries", j.tries+1,
			"delay_after_seal_ms", float64(delay.Microseconds())/1000)
		if u.Uploaded != nil {
			u.Uploaded(sc, delay)
		}
	}
}

// due returns the first job whose time has come, or nil and how long to
// wait for one (an hour when none is pending).
func (u *Uploader) due() (*job, time.Duration) {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := time.Now()
	wait := time.Hour
	for _, j := range u.pending {
		if !j.next.After(now) {
			return j, 0
		}
		wait = min(wait, j.next.Sub(now))
	}
	return nil, wait
}

// notifyLocked wakes Flush; u.mu is held.
func (u *Uploader) notifyLocked() {
	close(u.changed)
	u.changed = make(chan struct{})
}

// Flush makes every pending upload due now (skipping its backoff) and
// waits until none is pending or ctx ends, for a stopping daemon. It
// returns how many are still pending. Run must be running, on a context
// that outlives Flush's.
func (u *Uploader) Flush(ctx context.Context) int {
	u.mu.Lock()
	for _, j := range u.pending {
		j.next = time.Time{}
	}
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
	for {
		u.mu.Lock()
		n, changed := len(u.pending), u.changed
		u.mu.Unlock()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-changed:
		}
	}
}

// maxResume bounds how many queue files Resume reads: each is one sealed
// recording of this VM, so more means something else writes there.
const maxResume = 100000

func (u *Uploader) queueFile(id string) string { return filepath.Join(u.Dir, id+".json") }

// writeQueued writes sess's queue file atomically (temporary file,
// fsync, rename).
func (u *Uploader) writeQueued(sess *store.Session) error {
	if !validID(sess.ID) {
		return fmt.Errorf("invalid session id %q", sess.ID)
	}
	if err := os.MkdirAll(u.Dir, 0o700); err != nil {
		return err
	}
	js, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(u.Dir, ".queue-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(js); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), u.queueFile(sess.ID))
}

// Resume queues every recording of the persistent queue (Dir) again,
// oldest first, and returns how many. A queue file whose recording is no
// longer on disk (the recording block's retention removed it) is logged
// and removed. Call it once, before Run.
func (u *Uploader) Resume() (int, error) {
	if u.Dir == "" {
		return 0, nil
	}
	ents, err := os.ReadDir(u.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read upload queue %s: %w", u.Dir, err)
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, ".queue-") {
			os.Remove(filepath.Join(u.Dir, n)) // a write torn by a crash
			continue
		}
		if e.Type().IsRegular() && strings.HasSuffix(n, ".json") && validID(strings.TrimSuffix(n, ".json")) {
			names = append(names, n)
		}
	}
	sort.Strings(names) // session IDs sort by start time
	if len(names) > maxResume {
		u.log.Error("the upload queue holds more files than are read; the oldest are left", "files", len(names), "read", maxResume, "dir", u.Dir)
		names = names[len(names)-maxResume:]
	}
	n := 0
	for _, name := range names {
		p := filepath.Join(u.Dir, name)
		js, err := os.ReadFile(p)
		var sess store.Session
		if err == nil {
			err = json.Unmarshal(js, &sess)
		}
		if err == nil && sess.ID+".json" != name {
			err = fmt.Errorf("it describes session %q", sess.ID)
		}
		if err != nil {
			u.log.Error("an upload queue file is unreadable and is skipped", "file", p, "error", err)
			continue
		}
		if _, err := os.Stat(sess.Path); err != nil {
			u.log.Error("a queued recording is no longer on disk and cannot be uploaded", "session", sess.ID, "path", sess.Path, "error", err)
			os.Remove(p)
			continue
		}
		u.enqueue(&sess)
		n++
	}
	u.mu.Lock()
	u.resumed += n
	u.mu.Unlock()
	return n, nil
}

// checkpoints uploads a checkpoint of every active session, each within
// the checkpoint interval (at least 5 s), logging failures.
func (u *Uploader) checkpoints(ctx context.Context) {
	for _, sess := range u.Active() {
		tctx, cancel := context.WithTimeout(ctx, max(u.Checkpoint, 5*time.Second))
		sc, err := u.b.PutCheckpoint(tctx, &sess, u.pub)
		cancel()
		if ctx.Err() != nil {
			return
		}
		u.mu.Lock()
		if err != nil {
			u.cpFailed++
		} else {
			u.cpDone++
		}
		u.mu.Unlock()
		if u.checkpointed == nil {
			u.checkpointed = make(map[string]bool)
		}
		u.checkpointed[sess.ID] = true // also after a failure: a try may have stored part
		if err != nil {
			u.log.Warn("checkpoint of an active session failed; the next one retries", "session", sess.ID, "store", u.b.String(), "error", err)
			continue
		}
		u.log.Debug("checkpoint uploaded", "session", sess.ID, "bytes", sc.Size)
	}
}
