// Package s3 keeps sealed recordings and their index entries in
// S3-compatible object storage (AWS S3, MinIO, Ceph RGW, versitygw, ...),
// so that a recording outlives the ephemeral runner VM that wrote it.
//
// A session is two objects under the store's prefix:
//
//	PREFIX/ID.rec   the recording file, byte for byte
//	PREFIX/ID.json  its sidecar: the index entry (store.Session), the
//	                recording public key of the VM that signed it, and
//	                the recording's size and SHA-256
//
// The sidecar is written after the recording, so a sidecar in the store
// means the recording it names is there too: List shows only complete
// uploads. Where the bucket has object lock enabled, both objects are put
// with a retention date (Config.Retention); elsewhere they are put plainly.
//
// Beside them, PREFIX/active/ holds checkpoints of sessions still open
// (checkpoint.go) and PREFIX/keys/VM/ the VMs' recording keys endorsed
// by a fleet signing key (fleet.go).
//
// The client is minio-go v7. Nothing here trusts the store: Verify checks
// each recording's checksums, hash chain and signatures as a local
// `sluice verify` does. The public key in a sidecar is the writer's own
// claim; a caller that knows the VM's key pins it (Verify's pub).
package s3

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
)

// Object name suffixes.
const (
	recSuffix     = ".rec"
	sidecarSuffix = ".json"
)

// sidecarVersion is the Sidecar format's version.
const sidecarVersion = 1

// maxSidecar bounds a sidecar object read back from the store.
const maxSidecar = 1 << 20

// ErrNotFound is returned for a session ID the store does not hold.
var ErrNotFound = errors.New("no such session in the store")

// Config says which store to use and how to reach it.
type Config struct {
	// URL is s3://BUCKET or s3://BUCKET/PREFIX.
	URL string
	// Endpoint is the server's HOST:PORT; "" means AWS
	// (s3.amazonaws.com).
	Endpoint string
	// AccessKey and SecretKey sign requests; both "" means anonymous.
	// Never log them.
	AccessKey, SecretKey string
	// Region is the bucket's region; "" lets the client ask the server.
	Region string
	// Insecure talks plain HTTP instead of HTTPS (a server on loopback).
	Insecure bool
	// RootCAs, when set, are the only roots trusted for the server's
	// certificate; nil uses the system's.
	RootCAs *x509.CertPool
	// Retention, when positive, is how long each uploaded object is
	// locked (governance mode) where the bucket has object lock enabled.
	// A bucket without object lock gets the objects unlocked.
	Retention time.Duration
	// VM is the writer's name, put in each sidecar it uploads (and
	// checked against the fleet key's endorsements, see fleet.go); ""
	// for a reader.
	VM string
}

// ParseURL splits s3://BUCKET/PREFIX into its bucket and its prefix
// (without slashes at either end; "" for none).
func ParseURL(s string) (bucket, prefix string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("parse store url: %w", err)
	}
	if u.Scheme != "s3" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("store url %q: want s3://BUCKET or s3://BUCKET/PREFIX", s)
	}
	prefix = strings.Trim(u.Path, "/")
	if strings.Contains(prefix, "//") {
		return "", "", fmt.Errorf("store url %q: the prefix has an empty path segment", s)
	}
	return u.Host, prefix, nil
}

// Bucket is an open store. It is safe for concurrent use; it holds no
// connection of its own beyond the HTTP client's idle pool.
type Bucket struct {
	client    *minio.Client
	bucket    string
	prefix    string // "" or "a/b/" (with the trailing slash)
	retention time.Duration
	vm        string
}

// Open checks cfg and makes a client. It does not contact the server:
// the first call that needs it does.
func Open(cfg Config) (*Bucket, error) {
	bucket, prefix, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	endpoint := cfg.Endpoint
	if endpoint == "" {
		endpoint = "s3.amazonaws.com"
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.RootCAs != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	}
	var creds *credentials.Credentials
	if cfg.AccessKey != "" || cfg.SecretKey != "" {
		creds = credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, "")
	} else {
		creds = credentials.New(&credentials.Static{Value: credentials.Value{SignerType: credentials.SignatureAnonymous}})
	}
	c, err := minio.New(endpoint, &minio.Options{
		Creds: creds, Secure: !cfg.Insecure, Transport: tr, Region: cfg.Region,
		// Callers retry with their own backoff (Uploader) or report at
		// once (the CLI): one try per call.
		MaxRetries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.URL, err)
	}
	if prefix != "" {
		prefix += "/"
	}
	return &Bucket{client: c, bucket: bucket, prefix: prefix, retention: cfg.Retention, vm: cfg.VM}, nil
}

// String is the store's s3:// URL.
func (b *Bucket) String() string { return "s3://" + b.bucket + "/" + b.prefix }

// Sidecar is the JSON object stored beside each recording.
type Sidecar struct {
	Version int `json:"version"`
	// Session is the index entry as the VM's index had it when the
	// recording was sealed. Its Path is the file's path on that VM.
	Session store.Session `json:"session"`
	// PublicKey is the recording public key of the VM that wrote the
	// recording (record.MarshalPublicKey's format): the writer's own
	// claim, not a trust anchor.
	PublicKey string `json:"public_key"`
	// VM is the name of the VM that uploaded it (the store block's vm),
	// whose fleet-endorsed keys (keys/VM/) a reader checks PublicKey
	// against.
	VM string `json:"vm,omitempty"`
	// Object is the recording's object name; Size and SHA256 are its
	// length and lowercase hex SHA-256 as uploaded.
	Object string `json:"object"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Uploaded is when the recording was uploaded.
	Uploaded time.Time `json:"uploaded"`
	// Checkpoint, when set, marks the checkpoint of a session still
	// active when it was taken (under active/): Object holds the
	// recording's prefix written by then, unsealed.
	Checkpoint time.Time `json:"checkpoint,omitzero"`
}

func (b *Bucket) recName(id string) string     { return b.prefix + id + recSuffix }
func (b *Bucket) sidecarName(id string) string { return b.prefix + id + sidecarSuffix }

// validID reports whether id can name objects: session IDs are
// timestamps and hex, and nothing from outside becomes a path element.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_' || r == ':') {
			return false
		}
	}
	return !strings.Contains(id, "..")
}

// Put uploads the recording at sess.Path, then its sidecar, and returns
// once the store has acknowledged both. pub is the key that verifies the
// recording. On error nothing is known to be stored and the call may be
// repeated; a repeat overwrites what an earlier try left.
func (b *Bucket) Put(ctx context.Context, sess *store.Session, pub ed25519.PublicKey) (*Sidecar, error) {
	if !validID(sess.ID) {
		return nil, fmt.Errorf("upload recording: invalid session id %q", sess.ID)
	}
	f, err := os.Open(sess.Path)
	if err != nil {
		return nil, fmt.Errorf("upload recording: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	size, err := io.Copy(h, f)
	if err != nil {
		return nil, fmt.Errorf("upload recording: read %s: %w", sess.Path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("upload recording: %w", err)
	}
	opts, err := b.putOptions(ctx, "application/octet-stream")
	if err != nil {
		return nil, err
	}
	if _, err := b.client.PutObject(ctx, b.bucket, b.recName(sess.ID), io.LimitReader(f, size), size, opts); err != nil {
		return nil, fmt.Errorf("upload recording %s: %w", sess.ID, err)
	}
	sc := &Sidecar{
		Version: sidecarVersion, Session: *sess, PublicKey: string(record.MarshalPublicKey(pub)), VM: b.vm,
		Object: b.recName(sess.ID), Size: size, SHA256: hex.EncodeToString(h.Sum(nil)), Uploaded: time.Now().UTC(),
	}
	js, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("upload index entry %s: %w", sess.ID, err)
	}
	opts.ContentType = "application/json"
	if _, err := b.client.PutObject(ctx, b.bucket, b.sidecarName(sess.ID), bytes.NewReader(js), int64(len(js)), opts); err != nil {
		return nil, fmt.Errorf("upload index entry %s: %w", sess.ID, err)
	}
	return sc, nil
}

// putOptions are the options of an upload: a retention date when one is
// configured and the bucket has object lock enabled.
func (b *Bucket) putOptions(ctx context.Context, contentType string) (minio.PutObjectOptions, error) {
	opts := minio.PutObjectOptions{ContentType: contentType}
	if b.retention <= 0 {
		return opts, nil
	}
	locked, err := b.ObjectLock(ctx)
	if err != nil {
		return opts, err
	}
	if locked {
		opts.Mode = minio.Governance
		opts.RetainUntilDate = time.Now().Add(b.retention).UTC()
	}
	return opts, nil
}

// ObjectLock reports whether the bucket has object lock enabled. A
// server that does not implement object lock, or a bucket without it,
// reports false with a nil error.
func (b *Bucket) ObjectLock(ctx context.Context) (bool, error) {
	enabled, _, _, _, err := b.client.GetObjectLockConfig(ctx, b.bucket)
	if err != nil {
		switch minio.ToErrorResponse(err).Code {
		case "ObjectLockConfigurationNotFoundError", "NotImplemented", "MethodNotAllowed", "InvalidRequest":
			return false, nil
		}
		return false, fmt.Errorf("read object lock configuration of %s: %w", b.bucket, err)
	}
	return enabled == "Enabled", nil
}

// Stat returns the sidecar of session id (an exact ID) or ErrNotFound.
func (b *Bucket) Stat(ctx context.Context, id string) (*Sidecar, error) {
	if !validID(id) {
		return nil, fmt.Errorf("invalid session id %q", id)
	}
	return b.readSidecar(ctx, b.sidecarName(id))
}

func (b *Bucket) readSidecar(ctx context.Context, name string) (*Sidecar, error) {
	obj, err := b.client.GetObject(ctx, b.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	defer obj.Close()
	js, err := io.ReadAll(io.LimitReader(obj, maxSidecar+1))
	if err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if len(js) > maxSidecar {
		return nil, fmt.Errorf("read %s: larger than %d bytes", name, maxSidecar)
	}
	var sc Sidecar
	if err := json.Unmarshal(js, &sc); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if sc.Version != sidecarVersion {
		return nil, fmt.Errorf("read %s: sidecar version %d, want %d", name, sc.Version, sidecarVersion)
	}
	if sc.Session.ID+sidecarSuffix != path.Base(name) {
		return nil, fmt.Errorf("read %s: it describes session %q", name, sc.Session.ID)
	}
	return &sc, nil
}

// List returns the sidecars of the sessions f selects, newest first, as
// store.Store.List does for a local index. It reads every sidecar under
// the prefix that the ID (which begins with the start time) does not rule
// out.
func (b *Bucket) List(ctx context.Context, f store.Filter) ([]*Sidecar, error) {
	var names []string
	sealed := map[string]bool{}
	for obj := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list %s: %w", b, obj.Err)
		}
		rest := strings.TrimPrefix(obj.Key, b.prefix)
		if strings.HasSuffix(rest, sidecarSuffix) && !strings.Contains(rest, "/") {
			names = append(names, obj.Key)
			sealed[strings.TrimSuffix(rest, sidecarSuffix)] = true
		}
	}
	// Checkpoints of active sessions, unless the sealed recording is
	// there too (its checkpoint is being deleted).
	for obj := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + activeDir}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list %s: %w", b, obj.Err)
		}
		rest := strings.TrimPrefix(obj.Key, b.prefix+activeDir)
		if id, ok := strings.CutSuffix(rest, sidecarSuffix); ok && !strings.Contains(rest, "/") && !sealed[id] {
			names = append(names, obj.Key)
		}
	}
	// Session IDs sort by start time.
	sort.Slice(names, func(i, j int) bool { return path.Base(names[i]) < path.Base(names[j]) })
	var out []*Sidecar
	for i := len(names) - 1; i >= 0; i-- {
		sc, err := b.readSidecar(ctx, names[i])
		if err != nil {
			return nil, err
		}
		if !f.Since.IsZero() && sc.Session.Start.Before(f.Since) {
			break
		}
		if match(&f, &sc.Session) {
			out = append(out, sc)
			if f.Limit > 0 && len(out) >= f.Limit {
				break
			}
		}
	}
	return out, nil
}

// match is store.Filter's test (unexported there).
func match(f *store.Filter, s *store.Session) bool {
	switch {
	case f.Repo != "" && s.Repository != f.Repo,
		f.RunID != "" && s.RunID != f.RunID,
		f.Target != "" && s.Target != f.Target,
		f.Status != "" && s.Status != f.Status:
		return false
	case f.Verdict != "":
		for _, v := range s.Verdicts {
			if strings.EqualFold(v, f.Verdict) {
				return true
			}
		}
		return false
	}
	return true
}

// Find returns the sidecar of the session whose ID is id or begins with
// it, as store.Store.Get accepts a unique prefix.
func (b *Bucket) Find(ctx context.Context, id string) (*Sidecar, error) {
	if !validID(id) {
		return nil, fmt.Errorf("invalid session id %q", id)
	}
	var match []string
	for obj := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + id}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list %s: %w", b, obj.Err)
		}
		rest := strings.TrimPrefix(obj.Key, b.prefix)
		if strings.HasSuffix(rest, sidecarSuffix) && !strings.Contains(rest, "/") {
			if rest == id+sidecarSuffix {
				return b.readSidecar(ctx, obj.Key)
			}
			match = append(match, obj.Key)
		}
	}
	if len(match) == 0 {
		for obj := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + activeDir + id}) {
			if obj.Err != nil {
				return nil, fmt.Errorf("list %s: %w", b, obj.Err)
			}
			rest := strings.TrimPrefix(obj.Key, b.prefix+activeDir)
			if strings.HasSuffix(rest, sidecarSuffix) && !strings.Contains(rest, "/") {
				if rest == id+sidecarSuffix {
					return b.readSidecar(ctx, obj.Key)
				}
				match = append(match, obj.Key)
			}
		}
	}
	switch len(match) {
	case 0:
		return nil, ErrNotFound
	case 1:
		return b.readSidecar(ctx, match[0])
	}
	return nil, fmt.Errorf("session id prefix %q is ambiguous", id)
}

// Recording is a recording read back from the store.
type Recording struct {
	Header record.Header
	// Events are the recorded events in order, without checkpoints and
	// the seal.
	Events []record.Event
	// Result is what reading found; with a key, SignedThrough says how
	// far the signatures verified.
	Result record.Result
}

// Read downloads sc's recording and reads it frame by frame, checking
// its size and SHA-256 against the sidecar, every frame's checksum and
// the hash chain, and, when pub is not nil, the key id and every
// checkpoint and seal signature (record.Verify's checks). An integrity
// failure is an error, returned with the Recording read up to it.
func (b *Bucket) Read(ctx context.Context, sc *Sidecar, pub ed25519.PublicKey) (*Recording, error) {
	if pub != nil && len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("verify recording: public key has %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	want := b.recName(sc.Session.ID)
	if !sc.Checkpoint.IsZero() {
		want = b.activeRecName(sc.Session.ID)
	}
	if sc.Object != want {
		return nil, fmt.Errorf("read recording %s: the sidecar names object %q, want %q", sc.Session.ID, sc.Object, want)
	}
	obj, err := b.client.GetObject(ctx, b.bucket, sc.Object, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("read recording %s: %w", sc.Session.ID, err)
	}
	defer obj.Close()
	h := sha256.New()
	rd, err := record.NewReader(io.TeeReader(obj, h), pub)
	if err != nil {
		return nil, fmt.Errorf("read recording %s: %w", sc.Session.ID, err)
	}
	rec := &Recording{Header: rd.Header()}
	for {
		e, err := rd.Next()
		if err != nil {
			rec.Result = rd.Result()
			if !errors.Is(err, io.EOF) {
				return rec, fmt.Errorf("read recording %s: %w", sc.Session.ID, err)
			}
			break
		}
		if e.Type != record.TypeCheckpoint && e.Type != record.TypeSeal {
			rec.Events = append(rec.Events, e)
		}
	}
	// Whatever follows the last frame (torn bytes) counts in the digest.
	if _, err := io.Copy(h, obj); err != nil {
		return rec, fmt.Errorf("read recording %s: %w", sc.Session.ID, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sc.SHA256 {
		return rec, fmt.Errorf("read recording %s: its SHA-256 is %s, the sidecar says %s", sc.Session.ID, got, sc.SHA256)
	}
	if rec.Header.Session != sc.Session.ID {
		return rec, fmt.Errorf("read recording %s: its header names session %q", sc.Session.ID, rec.Header.Session)
	}
	return rec, nil
}
