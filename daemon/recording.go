package daemon

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/approve"
	"github.com/sluicehq/sluice/enforcer/credential"
	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// recorder opens each flow's recording and index entry and finishes them.
type recorder struct {
	dir   string // data_dir/recordings
	keys  *record.Keys
	index *store.Store
	// pool creates recording files ahead of need (nil: each is created
	// when its session opens).
	pool *record.Pool
	opts record.Options
	log  hclog.Logger
	live *live // nil: no live export
	// broker takes the session's approval holds.
	broker *approve.Broker
	// secrets reads the credentials the ruleset injects.
	secrets *credential.Store
	// upload, when set, takes each sealed session for the store (it
	// never blocks).
	upload func(*store.Session)
	// events, when set, publishes the daemon's events (it never blocks).
	events func(events.Event)

	// byJob are the recorded sessions open now, by job (identity's job
	// key), so that a tamper alert is also written into its job's
	// recordings.
	jobMu sync.Mutex
	byJob map[string]map[*enforcer.Session]struct{}

	// ending counts the sessions whose final index entry (and upload)
	// is still being committed.
	ending sync.WaitGroup

	// open are the recorded sessions open now, by ID, for the store's
	// checkpoints (bounded by the open flows).
	openMu   sync.Mutex
	openSess map[string]openSession
}

type openSession struct {
	idx  store.Session
	sess *enforcer.Session
}

// trackOpen adds (or, with sess nil, removes) an open recorded session.
func (r *recorder) trackOpen(idx *store.Session, sess *enforcer.Session) {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	if sess == nil {
		delete(r.openSess, idx.ID)
		return
	}
	if r.openSess == nil {
		r.openSess = make(map[string]openSession)
	}
	r.openSess[idx.ID] = openSession{idx: *idx, sess: sess}
}

// openSessions returns the index entries of the recorded sessions open
// now, with their counts so far.
func (r *recorder) openSessions() []store.Session {
	r.openMu.Lock()
	defer r.openMu.Unlock()
	out := make([]store.Session, 0, len(r.openSess))
	for _, o := range r.openSess {
		e := o.idx
		e.Statements, e.Denied = o.sess.Counts()
		e.Verdicts = o.sess.Verdicts()
		out = append(out, e)
	}
	return out
}

// trackJob adds (or, with add false, removes) an open session of job.
func (r *recorder) trackJob(job string, s *enforcer.Session, add bool) {
	if job == "" {
		return
	}
	r.jobMu.Lock()
	defer r.jobMu.Unlock()
	if add {
		if r.byJob == nil {
			r.byJob = map[string]map[*enforcer.Session]struct{}{}
		}
		if r.byJob[job] == nil {
			r.byJob[job] = map[*enforcer.Session]struct{}{}
		}
		r.byJob[job][s] = struct{}{}
		return
	}
	delete(r.byJob[job], s)
	if len(r.byJob[job]) == 0 {
		delete(r.byJob, job)
	}
}

// noteJob writes ev into every open recording of job; it returns how many.
func (r *recorder) noteJob(job string, ev record.Event) int {
	if job == "" {
		return 0
	}
	r.jobMu.Lock()
	sessions := make([]*enforcer.Session, 0, len(r.byJob[job]))
	for s := range r.byJob[job] {
		sessions = append(sessions, s)
	}
	r.jobMu.Unlock()
	n := 0
	for _, s := range sessions {
		if s.Record(record.Metadata, ev) == nil {
			n++
		}
	}
	return n
}

func newRecorder(cfg *Config, log hclog.Logger) (*recorder, error) {
	keys, err := record.LoadOrCreateKeys(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("recording keys: %w", err)
	}
	dir := filepath.Join(cfg.DataDir, "recordings")
	idx, err := store.Open(dir)
	if err != nil {
		return nil, err
	}
	if n, err := idx.MarkInterrupted(); err != nil {
		idx.Close()
		return nil, err
	} else if n > 0 {
		log.Warn("sessions of the previous daemon were not sealed; marked interrupted", "sessions", n)
	}
	if n, err := recoverUnindexed(idx, dir, time.Now()); err != nil {
		log.Warn("looking for recordings missing from the index failed", "error", err)
	} else if n > 0 {
		log.Warn("recordings of the previous daemon missing from the index (it stopped before their entries were committed) indexed as interrupted", "sessions", n)
	}
	lv, err := newLive(cfg.Live, log.Named("live"))
	if err != nil {
		idx.Close()
		return nil, err
	}
	return &recorder{dir: dir, keys: keys, index: idx, pool: record.NewPool(dir, recordingPool), opts: record.Options{FsyncEvery: cfg.Recording.FsyncEvery}, log: log, live: lv, secrets: credential.NewStore()}, nil
}

// recordingPool is how many recording files the recorder creates ahead of
// need (record.Pool).
const recordingPool = 4

// create starts the recording of session id, with a pooled file when one
// is ready.
func (r *recorder) create(id string) (*record.Writer, error) {
	if r.pool != nil {
		return r.pool.Create(id, r.keys, r.opts)
	}
	return record.Create(r.dir, id, r.keys, r.opts)
}

// newSessionID returns an ID that sorts by start time.
func newSessionID(t time.Time) string {
	var b [4]byte
	rand.Read(b[:])
	return t.UTC().Format("20060102T150405.000Z") + "-" + hex.EncodeToString(b[:])
}

// open implements interceptor.Proxy.Sessions.
func (r *recorder) open(ctx context.Context, f *interceptor.Flow, connect ruleset.Decision) (*enforcer.Session, func(interceptor.Result), error) {
	log := r.log.With("flow", f.ID, "target", f.Target.Name)
	level := record.LevelOf(connect.Record)
	if level == record.None {
		sess := enforcer.NewSession(ctx, f.Match, nil, level, log)
		sess.Holder = holder(r.broker, "", f)
		sess.Secrets = r.secrets
		return sess, func(interceptor.Result) {}, nil
	}
	id := newSessionID(f.Start)
	w, err := r.create(id)
	if err != nil {
		return nil, nil, err
	}
	sess := enforcer.NewSession(ctx, f.Match, w, level, log.With("session", id))
	if r.live != nil {
		sess.Tee = r.live.tee(id)
	}
	sess.Holder = holder(r.broker, id, f)
	if r.events != nil {
		sess.Tee = eventsTee(r.events, id, f.Target.Name, sess.Tee)
		sess.Holder = eventsHolder(r.events, id, f.Target.Name, level >= record.Commands, sess.Holder)
	}
	sess.Secrets = r.secrets
	idx := &store.Session{
		ID: id, Path: w.Path(), Start: f.Start, Status: store.StatusActive,
		Target: f.Target.Name, Protocol: f.Target.Protocol, OrigDst: f.Dest.String(),
		PID: f.Process.TGID, UID: f.Process.UID, Comm: f.Process.Comm, Exe: f.Process.Exe,
		IdentityLevel: f.Identity.Level, Level: level.String(),
		Repository: f.Identity.Claims["repository"], Ref: f.Identity.Claims["ref"],
		RunID: f.Identity.Claims["run_id"], Actor: f.Identity.Claims["actor"],
	}
	fields := map[string]string{
		"flow": strconv.FormatUint(f.ID, 10), "target": f.Target.Name, "protocol": f.Target.Protocol,
		"orig_dst": f.Dest.String(), "client": f.Client.String(),
		"pid": strconv.FormatUint(uint64(f.Process.TGID), 10), "tid": strconv.FormatUint(uint64(f.Process.PID), 10),
		"uid": strconv.FormatUint(uint64(f.Process.UID), 10), "gid": strconv.FormatUint(uint64(f.Process.GID), 10),
		"cgroup_id": strconv.FormatUint(f.Process.CgroupID, 10), "cgroup": f.Facts.Process.Cgroup,
		"comm": f.Process.Comm, "exe": f.Process.Exe,
		"identity.level": f.Identity.Level, "identity.job": f.Identity.Job, "identity.reason": f.Identity.Reason,
		"ruleset": f.Match.Ruleset().Digest(), "record_level": level.String(),
	}
	fields["netns"] = strconv.FormatUint(f.Process.Netns, 10)
	if c := f.Process.Container; c != nil {
		fields["container.id"], fields["container.name"], fields["container.image"], fields["container.runtime"] = c.ID, c.Name, c.Image, c.Runtime
		for k, v := range c.Labels {
			fields["container.label."+k] = v
		}
		idx.Container, idx.Image = c.ID, c.Image
	}
	for k, v := range f.Identity.Claims {
		fields["claim."+k] = v
	}
	for k, v := range f.Identity.Hints {
		fields["hint."+k] = v
	}
	if err := sess.Record(level, record.Event{Type: record.TypeSessionStart, Time: f.Start, Fields: fields,
		Verdict: connect.Action.String(), Rule: connect.Rule.ID, Reason: connect.Reason}); err != nil {
		w.Close()
		return nil, nil, err
	}
	// The session's entry is committed without the flow waiting for the
	// disk (DESIGN: nothing on the query path waits on disk); it shares
	// the commit of the sessions around it. A failed commit fails the
	// session's recording, so every later command is denied. A crash
	// before the commit leaves a recording the next daemon indexes
	// (recoverUnindexed).
	if err := r.index.PutAsync(idx, func(err error) {
		sess.FailRecording(fmt.Errorf("index session: %w", err))
	}); err != nil {
		w.Close()
		return nil, nil, fmt.Errorf("index session: %w", err)
	}
	r.trackJob(f.Identity.Job, sess, true)
	r.trackOpen(idx, sess)
	end := func(res interceptor.Result) {
		r.trackJob(f.Identity.Job, sess, false)
		r.trackOpen(idx, nil)
		reason := ""
		if res.Err != nil {
			reason = res.Err.Error()
		}
		sess.Record(level, record.Event{Type: record.TypeSessionEnd, Reason: reason,
			Bytes: res.BytesFromClient + res.BytesToClient, DurationUS: time.Since(f.Start).Microseconds(),
			Fields: map[string]string{"bytes_from_client": strconv.FormatInt(res.BytesFromClient, 10), "bytes_to_client": strconv.FormatInt(res.BytesToClient, 10)}})
		idx.Status = store.StatusSealed
		if err := w.Close(); err != nil {
			log.Error("sealing the recording failed", "session", id, "error", err)
			idx.Status = store.StatusInterrupted
		}
		idx.End = time.Now()
		idx.Statements, idx.Denied = sess.Counts()
		idx.Verdicts = sess.Verdicts()
		idx.Bytes = res.BytesFromClient + res.BytesToClient
		// No client waits on the final entry: it may share the commit
		// of the next session's start (store.PutDeferred), so the flow
		// does not wait for it either; Close (waitEnds) does. The upload
		// is queued (its queue file written) before the entry records
		// the seal: a crash between the two leaves a queued upload of a
		// sealed recording, never an index that says sealed with no
		// upload left to make.
		r.ending.Add(1)
		go func() {
			defer r.ending.Done()
			if r.upload != nil && idx.Status == store.StatusSealed {
				r.upload(idx)
			}
			if err := r.index.PutDeferred(idx); err != nil {
				log.Error("updating the recording index failed", "session", id, "error", err)
			}
		}()
	}
	return sess, end, nil
}

// routes adds the recording endpoints to the API.
func (r *recorder) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/sessions", func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		f := store.Filter{Repo: q.Get("repo"), RunID: q.Get("run_id"), Target: q.Get("target"), Verdict: q.Get("verdict")}
		if s := q.Get("since"); s != "" {
			t, err := api.ParseSince(s)
			if err != nil {
				api.WriteError(w, http.StatusBadRequest, err)
				return
			}
			f.Since = t
		}
		f.Limit, _ = strconv.Atoi(q.Get("limit"))
		list, err := r.index.List(f)
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, err)
			return
		}
		if list == nil {
			list = []*store.Session{}
		}
		api.WriteJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("GET /v1/sessions/{id}", func(w http.ResponseWriter, req *http.Request) {
		sess, err := r.index.Get(req.PathValue("id"))
		if err != nil {
			api.WriteError(w, http.StatusNotFound, err)
			return
		}
		rec, err := record.Open(sess.Path)
		resp := api.SessionDetail{}
		resp.Session, _ = json.Marshal(sess)
		if err != nil {
			resp.ReadError = err.Error()
		}
		if rec != nil {
			resp.Header, _ = json.Marshal(rec.Header())
			resp.Events, _ = json.Marshal(rec.Events())
			resp.RecordingStatus = rec.Status().String()
		}
		api.WriteJSON(w, http.StatusOK, resp)
	})
	mux.HandleFunc("GET /v1/sessions/{id}/verify", func(w http.ResponseWriter, req *http.Request) {
		sess, err := r.index.Get(req.PathValue("id"))
		if err != nil {
			api.WriteError(w, http.StatusNotFound, err)
			return
		}
		api.WriteJSON(w, http.StatusOK, r.verify(sess))
	})
	mux.HandleFunc("GET /v1/verify", func(w http.ResponseWriter, req *http.Request) {
		list, err := r.index.List(store.Filter{})
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, err)
			return
		}
		out := []api.VerifyResult{}
		for _, s := range list {
			out = append(out, r.verify(s))
		}
		api.WriteJSON(w, http.StatusOK, out)
	})
}

func (r *recorder) verify(s *store.Session) api.VerifyResult {
	res, err := record.Verify(s.Path, r.keys.PublicKey())
	v := api.VerifyResult{ID: s.ID, Path: s.Path, Status: res.Status.String(), Frames: res.Frames, Events: res.Events,
		SignedThrough: res.SignedThrough, TornBytes: res.TornBytes, IndexStatus: s.Status}
	if err != nil {
		v.Error = err.Error()
	}
	// The index remembers which sessions were sealed: a sealed session
	// whose file now reads as interrupted lost its end.
	if err == nil && s.Status == store.StatusSealed && res.Status != record.StatusSealed {
		v.Error = "the index records this session as sealed, but the recording has no seal: its end was cut off"
	}
	return v
}

// waitEnds waits until the sessions that ended have their final index
// entry committed and their upload queued.
func (r *recorder) waitEnds() { r.ending.Wait() }

// Close waits for the ended sessions' index entries (waitEnds), then
// closes the file pool and the index.
func (r *recorder) Close() error {
	r.waitEnds()
	if r.pool != nil {
		r.pool.Close()
	}
	return r.index.Close()
}

// recoverUnindexed indexes the recordings of the last two days (UTC)
// that have no index entry, as interrupted (or sealed, when their seal
// was written): a daemon that crashed in the
// few milliseconds between a session's start and the commit of its entry
// (open does not wait for it) leaves one. The entry is rebuilt from the
// recording's header and its session_start event; a file too short for
// them gets the header's fields only. It returns how many it indexed.
func recoverUnindexed(idx *store.Store, dir string, now time.Time) (int, error) {
	n := 0
	for _, day := range []time.Time{now.Add(-24 * time.Hour), now} {
		paths, err := filepath.Glob(filepath.Join(record.DayDir(dir, day), "*.rec"))
		if err != nil {
			return n, err
		}
		for _, path := range paths {
			id := strings.TrimSuffix(filepath.Base(path), ".rec")
			if _, err := idx.Get(id); !errors.Is(err, store.ErrNotFound) {
				continue
			}
			sess, err := entryOf(path, id)
			if err != nil {
				continue // not a recording this daemon can read: left for verify
			}
			if err := idx.Put(sess); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// entryOf rebuilds a session's index entry from its recording.
func entryOf(path, id string) (*store.Session, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd, err := record.NewReader(f, nil)
	if err != nil {
		return nil, err
	}
	h := rd.Header()
	if h.Session != id {
		return nil, fmt.Errorf("recording %s holds session %q", path, h.Session)
	}
	sess := &store.Session{ID: id, Path: path, Start: h.Start, Status: store.StatusInterrupted}
	if fi, err := f.Stat(); err == nil {
		sess.Bytes = fi.Size()
	}
	ev, err := rd.Next()
	if err == nil && ev.Type == record.TypeSessionStart {
		fillFromStart(sess, ev.Fields)
	}
	// Read to the end: a recording whose seal was written is sealed.
	for err == nil {
		_, err = rd.Next()
	}
	if errors.Is(err, io.EOF) && rd.Result().Status == record.StatusSealed {
		sess.Status = store.StatusSealed
	}
	return sess, nil
}

// fillFromStart sets an entry's fields from its session_start event.
func fillFromStart(sess *store.Session, fl map[string]string) {
	num := func(k string) uint32 {
		v, _ := strconv.ParseUint(fl[k], 10, 32)
		return uint32(v)
	}
	sess.Target, sess.Protocol, sess.OrigDst = fl["target"], fl["protocol"], fl["orig_dst"]
	sess.PID, sess.UID, sess.Comm, sess.Exe = num("pid"), num("uid"), fl["comm"], fl["exe"]
	sess.IdentityLevel, sess.Level = fl["identity.level"], fl["record_level"]
	sess.Repository, sess.Ref, sess.RunID, sess.Actor = fl["claim.repository"], fl["claim.ref"], fl["claim.run_id"], fl["claim.actor"]
	sess.Container, sess.Image = fl["container.id"], fl["container.image"]
}
