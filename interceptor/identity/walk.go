package identity

import (
	"sync"
	"time"
)

// The walk cache remembers, per connecting process, where its ancestry
// walk (findJob) ended: at which job anchor, or at no job. A test suite
// that opens a connection per test, or pgbench -C, connects from the same
// process again and again, and a walk reads /proc/PID/stat once per
// ancestor up to init.
//
// A process is keyed by its pid and its start time (field 22 of
// /proc/PID/stat), which the kernel sets at fork and no process can
// change, so a reused pid is a different key. A remembered walk is used
// only while, read again on every connection, the process still has the
// parent and name it had when it was walked, and its anchor still is the
// same process (pid, start time) with the same name; and for at most
// walkTTL, after which the ancestry is walked again. Within that second
// a change further up the ancestry (an ancestor in between exiting or
// renaming itself) is not seen; it cannot hand a process another job's
// anchor, since the walk that found the anchor was this process's own.
type walkCache struct {
	mu    sync.Mutex
	walks map[walkKey]walk
}

// walkKey is a connecting process: its pid and start time.
type walkKey struct {
	pid   uint32
	start uint64
}

// walk is a remembered ancestry walk.
type walk struct {
	ppid       uint32 // the process's parent and name when walked
	comm       string
	job        JobKey // zero: no job anchor
	anchorComm string
	at         time.Time
}

const (
	// walkTTL bounds how long a remembered walk is used.
	walkTTL = time.Second
	// maxWalks bounds the cache (an entry is under 100 bytes); when it
	// is full, expired walks are dropped, then all of them.
	maxWalks = 4096
)

// lookup returns the walk remembered for p, read from /proc just now,
// when it is still valid at now. It reads the anchor's stat to check it.
func (c *walkCache) lookup(root string, p proc, now time.Time) (walk, bool) {
	c.mu.Lock()
	w, ok := c.walks[walkKey{p.pid, p.start}]
	c.mu.Unlock()
	if !ok || w.ppid != p.ppid || w.comm != p.comm || now.Sub(w.at) >= walkTTL || now.Before(w.at) {
		return walk{}, false
	}
	if w.job != (JobKey{}) {
		a, err := readStat(root, w.job.PID)
		if err != nil || a.start != w.job.Start || a.comm != w.anchorComm {
			return walk{}, false
		}
	}
	return w, true
}

// remember stores the walk of p: chain and kind as findJob returned them.
func (c *walkCache) remember(p proc, chain []proc, kind string, now time.Time) {
	w := walk{ppid: p.ppid, comm: p.comm, at: now}
	if chain != nil {
		a := chain[len(chain)-1]
		w.job, w.anchorComm = JobKey{PID: a.pid, Start: a.start, Kind: kind}, a.comm
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.walks == nil {
		c.walks = make(map[walkKey]walk)
	}
	if len(c.walks) >= maxWalks {
		for k, old := range c.walks {
			if now.Sub(old.at) >= walkTTL || now.Before(old.at) {
				delete(c.walks, k)
			}
		}
		if len(c.walks) >= maxWalks {
			clear(c.walks)
		}
	}
	c.walks[walkKey{p.pid, p.start}] = w
}
