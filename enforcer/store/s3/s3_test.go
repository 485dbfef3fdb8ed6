package s3

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/minio/minio-go/v7"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/internal/testenv"
)

// sealed writes a sealed recording of session id with a statement and
// returns its index entry.
func sealed(t *testing.T, dir, id string, keys *record.Keys, start time.Time) *store.Session {
	t.Helper()
	w, err := record.Create(dir, id, keys, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, e := range []record.Event{
		{Type: record.TypeSessionStart, Fields: map[string]string{"target": "db"}},
		{Type: record.TypeStatement, Text: "SELECT 1 -- " + id, Verdict: "allow"},
		{Type: record.TypeSessionEnd},
	} {
		if err := w.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return &store.Session{ID: id, Path: w.Path(), Start: start, End: time.Now(), Status: store.StatusSealed,
		Target: "db", Protocol: "postgres", Repository: "acme/api", Statements: 1, Verdicts: []string{"allow"}}
}

func newKeys(t *testing.T) *record.Keys {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return record.NewKeys(priv)
}

func open(t *testing.T, s *testenv.S3, url string) *Bucket {
	t.Helper()
	b, err := Open(Config{URL: url, Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: s.SecretKey, Insecure: true, Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseURL(t *testing.T) {
	for _, c := range []struct{ in, bucket, prefix, err string }{
		{"s3://b", "b", "", ""},
		{"s3://b/", "b", "", ""},
		{"s3://b/fleet/recs/", "b", "fleet/recs", ""},
		{"https://b/x", "", "", "want s3://"},
		{"s3:///x", "", "", "want s3://"},
		{"s3://b/a//c", "", "", "empty path segment"},
		{"s3://u:p@b/x", "", "", "want s3://"},
	} {
		b, p, err := ParseURL(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseURL(%q) error = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || b != c.bucket || p != c.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", c.in, b, p, err, c.bucket, c.prefix)
		}
	}
}

// TestPutListReadVerify: a sealed recording and its sidecar round-trip
// through a real versitygw, with and without object lock; its signature
// verifies with the writer's key and not with another; a recording
// altered in the store is caught.
func TestPutListReadVerify(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{})
	for _, lock := range []bool{false, true} {
		name := "plain"
		if lock {
			name = "locked"
		}
		t.Run(name, func(t *testing.T) {
			s.MakeBucket(t, "rec-"+name, lock)
			b := open(t, s, "s3://rec-"+name+"/fleet/a")
			ctx := context.Background()
			if got, err := b.ObjectLock(ctx); err != nil || got != lock {
				t.Fatalf("ObjectLock = %v, %v; want %v", got, err, lock)
			}
			keys := newKeys(t)
			dir := t.TempDir()
			base := time.Now().Add(-time.Hour).UTC()
			var ids []string
			for i := range 3 {
				id := base.Add(time.Duration(i)*time.Minute).Format("20060102T150405.000Z") + "-0000000" + string(rune('a'+i))
				sess := sealed(t, dir, id, keys, base.Add(time.Duration(i)*time.Minute))
				if i == 1 {
					sess.Repository = "acme/web"
				}
				if _, err := b.Put(ctx, sess, keys.PublicKey()); err != nil {
					t.Fatal(err)
				}
				ids = append(ids, id)
			}
			list, err := b.List(ctx, store.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 3 || list[0].Session.ID != ids[2] || list[2].Session.ID != ids[0] {
				t.Fatalf("list = %d entries, want 3 newest first", len(list))
			}
			if l, _ := b.List(ctx, store.Filter{Repo: "acme/web"}); len(l) != 1 || l[0].Session.ID != ids[1] {
				t.Errorf("repo filter: %d entries", len(l))
			}
			if l, _ := b.List(ctx, store.Filter{Limit: 2}); len(l) != 2 {
				t.Errorf("limit 2: %d entries", len(l))
			}
			sc, err := b.Find(ctx, ids[0][:len(ids[0])-2])
			if err != nil || sc.Session.ID != ids[0] {
				t.Fatalf("Find(prefix) = %v, %v", sc, err)
			}
			if _, err := b.Find(ctx, ids[0][:10]); err == nil || !strings.Contains(err.Error(), "ambiguous") {
				t.Errorf("Find(ambiguous prefix) error = %v", err)
			}
			if _, err := b.Find(ctx, "29990101T000000.000Z"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Find(unknown) error = %v, want ErrNotFound", err)
			}
			pub, err := record.ParsePublicKey([]byte(sc.PublicKey))
			if err != nil || !pub.Equal(keys.PublicKey()) {
				t.Fatalf("sidecar key = %v, %v", pub, err)
			}
			rec, err := b.Read(ctx, sc, pub)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Result.Status != record.StatusSealed || len(rec.Events) != 3 || !strings.Contains(rec.Events[1].Text, ids[0]) || rec.Result.SignedThrough == 0 {
				t.Fatalf("read back: status %v, %d events, signed through %d", rec.Result.Status, len(rec.Events), rec.Result.SignedThrough)
			}
			if _, err := b.Read(ctx, sc, newKeys(t).PublicKey()); err == nil {
				t.Error("a recording verified with another VM's key")
			}

			// Altered in the store: under object lock the server refuses
			// the overwrite; without it, the SHA-256 and the frame
			// checksums catch it.
			data, _ := os.ReadFile(sc.Session.Path)
			data[len(data)/2] ^= 1
			_, err = s.Client(t).PutObject(ctx, b.bucket, sc.Object, strings.NewReader(string(data)), int64(len(data)), minio.PutObjectOptions{})
			switch {
			case lock && err == nil:
				t.Error("the store let a locked recording be overwritten")
			case !lock && err != nil:
				t.Fatal(err)
			}
			if _, err := b.Read(ctx, sc, pub); err == nil && !lock {
				t.Error("an altered recording read back without error")
			} else if err != nil && lock {
				t.Errorf("a locked recording no longer reads: %v", err)
			}
			if lock {
				// GetObjectRetention's XML from versitygw is not what
				// minio-go parses; the object's headers say the same.
				info, err := s.Client(t).StatObject(ctx, b.bucket, b.sidecarName(ids[0]), minio.StatObjectOptions{})
				if err != nil {
					t.Fatal(err)
				}
				mode := info.Metadata.Get("X-Amz-Object-Lock-Mode")
				until, _ := time.Parse(time.RFC3339, info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
				if mode != "GOVERNANCE" || until.Before(time.Now().Add(50*time.Minute)) {
					t.Errorf("sidecar retention = %q until %v, want GOVERNANCE for about an hour", mode, until)
				}
			}
		})
	}
}

// TestUploaderRetries: with the server down, uploads fail and are
// retried with backoff, the session is never blocked (Enqueue returns at
// once), and everything arrives once the server is back.
func TestUploaderRetries(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{})
	s.MakeBucket(t, "rec", false)
	b := open(t, s, "s3://rec/vm1")
	keys := newKeys(t)
	dir := t.TempDir()

	s.Stop(t)
	u := NewUploader(b, keys.PublicKey(), hclog.NewNullLogger())
	u.MinBackoff, u.MaxBackoff = 50*time.Millisecond, 200*time.Millisecond
	var mu sync.Mutex
	var delays []time.Duration
	u.Uploaded = func(_ *Sidecar, d time.Duration) {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
	})

	start := time.Now()
	var ids []string
	for i := range 2 {
		id := start.UTC().Add(time.Duration(i)*time.Millisecond).Format("20060102T150405.000Z") + "-0000000" + string(rune('a'+i))
		t0 := time.Now()
		u.Enqueue(sealed(t, dir, id, keys, start))
		if d := time.Since(t0); d > 50*time.Millisecond {
			t.Errorf("Enqueue took %v with the store down", d)
		}
		ids = append(ids, id)
	}
	testenv.WaitFor(t, 10*time.Second, "failed upload tries while the store is down", func() bool { return u.Stats().FailedTries >= 3 })
	if st := u.Stats(); st.Pending != 2 || st.Uploaded != 0 {
		t.Fatalf("stats with the store down = %+v", st)
	}
	s.Start(t)
	testenv.WaitFor(t, 20*time.Second, "both recordings uploaded after the store came back", func() bool { return u.Stats().Uploaded == 2 })
	if st := u.Stats(); st.Pending != 0 {
		t.Fatalf("stats = %+v", st)
	}
	for _, id := range ids {
		sc, err := b.Stat(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Read(context.Background(), sc, keys.PublicKey()); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	t.Logf("uploaded after the store came back; delays from seal: %v", delays)
	mu.Unlock()

	// With the store up, a sealed recording is in the store within a
	// moment: measure it.
	id := time.Now().UTC().Format("20060102T150405.000Z") + "-0000000z"
	sess := sealed(t, dir, id, keys, time.Now())
	sess.End = time.Now()
	u.Enqueue(sess)
	testenv.WaitFor(t, 10*time.Second, "the third upload", func() bool { return u.Stats().Uploaded == 3 })
	mu.Lock()
	t.Logf("upload delay after seal with the store up: %v", delays[len(delays)-1])
	mu.Unlock()
}

// TestUploaderFlush: Flush gives up when its context ends with the store
// down, and once the store is back it uploads at once, without waiting
// out the retry backoff.
func TestUploaderFlush(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{})
	s.MakeBucket(t, "rec", false)
	b := open(t, s, "s3://rec")
	keys := newKeys(t)
	s.Stop(t)
	u := NewUploader(b, keys.PublicKey(), hclog.NewNullLogger())
	u.MinBackoff, u.MaxBackoff = time.Hour, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	id := time.Now().UTC().Format("20060102T150405.000Z") + "-0000000f"
	u.Enqueue(sealed(t, t.TempDir(), id, keys, time.Now()))
	testenv.WaitFor(t, 10*time.Second, "the first failed try", func() bool { return u.Stats().FailedTries == 1 })

	fctx, fcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	if left := u.Flush(fctx); left != 1 {
		t.Errorf("Flush with the store down left %d, want 1", left)
	}
	fcancel()

	s.Start(t)
	start := time.Now()
	fctx, fcancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer fcancel()
	if left := u.Flush(fctx); left != 0 {
		t.Fatalf("Flush with the store back left %d (stats %+v)", left, u.Stats())
	}
	t.Logf("flushed in %v despite an hour's backoff", time.Since(start).Round(time.Millisecond))
	if _, err := b.Stat(context.Background(), id); err != nil {
		t.Fatal(err)
	}
}

// TestTLS: over HTTPS, the store's CA (Config.RootCAs) is what lets the
// client in; without it the system roots refuse the server.
func TestTLS(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{TLS: true})
	s.MakeBucket(t, "rec", false)
	pem, err := os.ReadFile(s.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	keys := newKeys(t)
	sess := sealed(t, t.TempDir(), time.Now().UTC().Format("20060102T150405.000Z")+"-0000000t", keys, time.Now())
	ctx := context.Background()

	b, err := Open(Config{URL: "s3://rec/tls", Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: s.SecretKey, RootCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, sess, keys.PublicKey()); err != nil {
		t.Fatal(err)
	}
	if l, err := b.List(ctx, store.Filter{}); err != nil || len(l) != 1 {
		t.Fatalf("list over TLS: %d, %v", len(l), err)
	}

	untrusted, err := Open(Config{URL: "s3://rec/tls", Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: s.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	var uerr *tls.CertificateVerificationError
	if _, err := untrusted.List(ctx, store.Filter{}); !errors.As(err, &uerr) {
		t.Errorf("list with the system roots: %v, want a certificate verification error", err)
	}
}

// TestUploaderPersistentQueue: recordings queued by an Uploader that
// stopped with the store down are queued again by the next Uploader on
// the same Dir (Resume) and arrive once the store is up; each queue file
// is removed once its upload is acknowledged, and a queue file whose
// recording is gone is dropped.
func TestUploaderPersistentQueue(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{})
	s.MakeBucket(t, "rec", false)
	b := open(t, s, "s3://rec/vm1")
	keys := newKeys(t)
	dir, qdir := t.TempDir(), filepath.Join(t.TempDir(), "uploads")

	s.Stop(t)
	u1 := NewUploader(b, keys.PublicKey(), hclog.NewNullLogger())
	u1.Dir = qdir
	start := time.Now()
	var ids, paths []string
	for i := range 3 {
		id := start.UTC().Add(time.Duration(i)*time.Millisecond).Format("20060102T150405.000Z") + "-0000000" + string(rune('a'+i))
		sess := sealed(t, dir, id, keys, start)
		u1.Enqueue(sess)
		ids, paths = append(ids, id), append(paths, sess.Path)
	}
	// The first daemon stops with everything pending; its third
	// recording is then removed from disk (local retention).
	if err := os.Remove(paths[2]); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(qdir)
	if len(ents) != 3 {
		t.Fatalf("queue files before the restart: %d, want 3", len(ents))
	}

	s.Start(t)
	u2 := NewUploader(b, keys.PublicKey(), hclog.NewNullLogger())
	u2.Dir = qdir
	n, err := u2.Resume()
	if err != nil || n != 2 {
		t.Fatalf("Resume = %d, %v; want the 2 recordings still on disk", n, err)
	}
	if st := u2.Stats(); st.Pending != 2 || st.Resumed != 2 {
		t.Fatalf("stats after Resume = %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- u2.Run(ctx) }()
	defer func() { cancel(); <-done }()
	testenv.WaitFor(t, 10*time.Second, "the resumed uploads done", func() bool { return u2.Stats().Uploaded == 2 })
	for _, id := range ids[:2] {
		sc, err := b.Stat(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Read(context.Background(), sc, keys.PublicKey()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Stat(context.Background(), ids[2]); !errors.Is(err, ErrNotFound) {
		t.Errorf("the recording removed before the restart: Stat = %v, want ErrNotFound", err)
	}
	testenv.WaitFor(t, 5*time.Second, "the queue empty", func() bool { ents, _ := os.ReadDir(qdir); return len(ents) == 0 })
	// A third start finds nothing to do.
	u3 := NewUploader(b, keys.PublicKey(), hclog.NewNullLogger())
	u3.Dir = qdir
	if n, err := u3.Resume(); n != 0 || err != nil {
		t.Errorf("Resume after the uploads = %d, %v", n, err)
	}
}

// TestFleetKey: a VM's recording key published with the fleet key's
// endorsement verifies its recordings; a recording signed with a
// forger's key (with or without an endorsement of the forger's own
// making), or relabelled with another VM's name, is ErrForged.
func TestFleetKey(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{})
	s.MakeBucket(t, "rec", true)
	ctx := context.Background()
	_, fleet, _ := ed25519.GenerateKey(rand.Reader)
	fleetPub := fleet.Public().(ed25519.PublicKey)
	dir := t.TempDir()
	put := func(vm, id string, keys *record.Keys) *Sidecar {
		t.Helper()
		b, err := Open(Config{URL: "s3://rec/fleet", Endpoint: s.Endpoint, AccessKey: s.AccessKey, SecretKey: s.SecretKey, Insecure: true, Retention: time.Hour, VM: vm})
		if err != nil {
			t.Fatal(err)
		}
		sc, err := b.Put(ctx, sealed(t, dir, id, keys, time.Now()), keys.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		return sc
	}
	b := open(t, s, "s3://rec/fleet")

	vmKeys := newKeys(t)
	e, err := Endorse(fleet, "runner-1", vmKeys.PublicKey(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if wrote, err := b.PublishKey(ctx, e, fleetPub); err != nil || !wrote {
		t.Fatalf("PublishKey = %v, %v", wrote, err)
	}
	// A second start finds it there and keeps its first_seen.
	e2, _ := Endorse(fleet, "runner-1", vmKeys.PublicKey(), time.Now().Add(time.Hour))
	if wrote, err := b.PublishKey(ctx, e2, fleetPub); err != nil || wrote {
		t.Fatalf("PublishKey again = %v, %v; want no write", wrote, err)
	}
	good := put("runner-1", "20260101T000000.000Z-00000001", vmKeys)
	pub, got, err := b.CheckFleet(ctx, good, fleetPub)
	if err != nil || !pub.Equal(vmKeys.PublicKey()) || !got.FirstSeen.Equal(e.FirstSeen) {
		t.Fatalf("CheckFleet(genuine) = %v, %+v, %v", pub, got, err)
	}
	if _, err := b.Read(ctx, good, pub); err != nil {
		t.Fatal(err)
	}

	// A forger with bucket write access signs with a key of their own.
	forger := newKeys(t)
	forged := put("runner-1", "20260101T000001.000Z-00000002", forger)
	if _, _, err := b.CheckFleet(ctx, forged, fleetPub); !errors.Is(err, ErrForged) {
		t.Errorf("CheckFleet(forger's key, no endorsement) = %v, want ErrForged", err)
	}
	// ... and endorses it with a fleet key of their own.
	_, otherFleet, _ := ed25519.GenerateKey(rand.Reader)
	fe, _ := Endorse(otherFleet, "runner-1", forger.PublicKey(), time.Now())
	if _, err := b.PublishKey(ctx, fe, otherFleet.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.CheckFleet(ctx, forged, fleetPub); !errors.Is(err, ErrForged) || !strings.Contains(err.Error(), "not signed by fleet key") {
		t.Errorf("CheckFleet(forger's key, forger's endorsement) = %v, want ErrForged", err)
	}
	// A genuine recording relabelled as another VM's.
	relabelled := put("runner-2", "20260101T000002.000Z-00000003", vmKeys)
	if _, _, err := b.CheckFleet(ctx, relabelled, fleetPub); !errors.Is(err, ErrForged) {
		t.Errorf("CheckFleet(another VM's name) = %v, want ErrForged", err)
	}
	// A sidecar without a VM (uploaded with no fleet setup).
	anon := put("", "20260101T000003.000Z-00000004", vmKeys)
	if _, _, err := b.CheckFleet(ctx, anon, fleetPub); !errors.Is(err, ErrForged) {
		t.Errorf("CheckFleet(no vm) = %v, want ErrForged", err)
	}
	// The key objects do not show up as sessions.
	list, err := b.List(ctx, store.Filter{})
	if err != nil || len(list) != 4 {
		t.Errorf("List = %d sessions, %v; want 4", len(list), err)
	}
}

// TestUploaderCheckpoints: Run uploads a checkpoint of each active
// session every Checkpoint; List and Find show it as active with its
// checkpoint time, Read checks the prefix; once the session is sealed
// and uploaded, the checkpoint is deleted.
func TestUploaderCheckpoints(t *testing.T) {
	s := testenv.StartS3(t, testenv.S3Options{})
	s.MakeBucket(t, "rec", true)
	b := open(t, s, "s3://rec/vm1")
	keys := newKeys(t)
	ctx := context.Background()
	id := time.Now().UTC().Format("20060102T150405.000Z") + "-0000000c"
	w, err := record.Create(t.TempDir(), id, keys, record.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []record.Event{{Type: record.TypeSessionStart}, {Type: record.TypeStatement, Text: "SELECT 'so far'", Verdict: "allow"}} {
		if err := w.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sess := &store.Session{ID: id, Path: w.Path(), Start: time.Now(), Status: store.StatusActive, Statements: 1}
	var mu sync.Mutex
	active := []store.Session{*sess}
	u := NewUploader(b, keys.PublicKey(), hclog.NewNullLogger())
	u.Checkpoint = 100 * time.Millisecond
	u.Active = func() []store.Session { mu.Lock(); defer mu.Unlock(); return append([]store.Session(nil), active...) }
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- u.Run(rctx) }()
	defer func() { cancel(); <-done }()

	testenv.WaitFor(t, 10*time.Second, "a checkpoint", func() bool { return u.Stats().Checkpoints >= 1 })
	list, err := b.List(ctx, store.Filter{})
	if err != nil || len(list) != 1 || list[0].Session.Status != store.StatusActive || list[0].Checkpoint.IsZero() {
		t.Fatalf("List with an active session = %+v, %v", list, err)
	}
	sc, err := b.Find(ctx, id[:20])
	if err != nil || sc.Checkpoint.IsZero() {
		t.Fatalf("Find(checkpoint) = %+v, %v", sc, err)
	}
	rec, err := b.Read(ctx, sc, keys.PublicKey())
	if err != nil || rec.Result.Status == record.StatusSealed || len(rec.Events) != 2 || rec.Events[1].Text != "SELECT 'so far'" {
		t.Fatalf("Read(checkpoint) = %+v, %v", rec, err)
	}

	// The session ends: sealed and uploaded, its checkpoint goes.
	mu.Lock()
	active = nil
	mu.Unlock()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sess.Status, sess.End = store.StatusSealed, time.Now()
	u.Enqueue(sess)
	testenv.WaitFor(t, 10*time.Second, "the sealed upload", func() bool { return u.Stats().Uploaded == 1 })
	if ids, err := b.Checkpoints(ctx); err != nil || len(ids) != 0 {
		t.Errorf("checkpoints after the sealed upload = %v, %v", ids, err)
	}
	list, err = b.List(ctx, store.Filter{})
	if err != nil || len(list) != 1 || list[0].Session.Status != store.StatusSealed || !list[0].Checkpoint.IsZero() {
		t.Fatalf("List after the seal = %+v, %v", list, err)
	}
}
