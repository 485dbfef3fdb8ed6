package s3

import (
	"context"
	"crypto/ed25519"
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
// or the Uploader stops. Enqueue never blocks, so a session never waits
// on the store. Nothing local is deleted: the recording stays on disk
// (and under the recording block's retention) whether or not it was
// uploaded. The queue is in memory: what is pending when the daemon
// stops is not uploaded by the next daemon.
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

	mu      sync.Mutex
	pending []*job
	failed  int64 // failed tries, ever
	done    int64 // uploads, ever
	wake    chan struct{}
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

// Enqueue adds a sealed session (a copy of sess is taken) and returns at
// once.
func (u *Uploader) Enqueue(sess *store.Session) {
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
}

// Stats returns the Uploader's counters now.
func (u *Uploader) Stats() UploaderStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	return UploaderStats{Pending: len(u.pending), Uploaded: u.done, FailedTries: u.failed}
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
	for {
		j, wait := u.due()
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
