package s3

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
)

// Checkpoints of active sessions: every so often (the store block's
// checkpoint) the uploader copies what each open recording holds so far
// to
//
//	PREFIX/active/ID.rec   the recording's prefix, as on disk then
//	PREFIX/active/ID.json  its sidecar, with the session active and
//	                       Checkpoint set
//
// overwriting the previous checkpoint, without object lock. They are
// deleted once the sealed recording is uploaded; a VM that dies
// mid-session leaves its last checkpoint behind, hash-chained and signed
// up to the recording's last signed checkpoint frame.

// activeDir is the folder of checkpoints under the prefix.
const activeDir = "active/"

func (b *Bucket) activeRecName(id string) string { return b.prefix + activeDir + id + recSuffix }
func (b *Bucket) activeSidecarName(id string) string {
	return b.prefix + activeDir + id + sidecarSuffix
}

// PutCheckpoint uploads the recording of the active session sess as it
// is on disk now (its first size bytes, however many the writer has
// written), then its sidecar marked with the checkpoint time, replacing
// the session's previous checkpoint.
func (b *Bucket) PutCheckpoint(ctx context.Context, sess *store.Session, pub ed25519.PublicKey) (*Sidecar, error) {
	if !validID(sess.ID) {
		return nil, fmt.Errorf("checkpoint recording: invalid session id %q", sess.ID)
	}
	f, err := os.Open(sess.Path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint recording: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("checkpoint recording: %w", err)
	}
	size := fi.Size()
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return nil, fmt.Errorf("checkpoint recording: read %s: %w", sess.Path, err)
	}
	now := time.Now().UTC()
	// Not locked: each checkpoint replaces the last.
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream"}
	if _, err := b.client.PutObject(ctx, b.bucket, b.activeRecName(sess.ID), io.NewSectionReader(f, 0, size), size, opts); err != nil {
		return nil, fmt.Errorf("checkpoint recording %s: %w", sess.ID, err)
	}
	sc := &Sidecar{
		Version: sidecarVersion, Session: *sess, PublicKey: string(record.MarshalPublicKey(pub)), VM: b.vm,
		Object: b.activeRecName(sess.ID), Size: size, SHA256: hex.EncodeToString(h.Sum(nil)), Uploaded: now, Checkpoint: now,
	}
	sc.Session.Status = store.StatusActive
	js, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return nil, err
	}
	opts.ContentType = "application/json"
	if _, err := b.client.PutObject(ctx, b.bucket, b.activeSidecarName(sess.ID), bytes.NewReader(js), int64(len(js)), opts); err != nil {
		return nil, fmt.Errorf("checkpoint index entry %s: %w", sess.ID, err)
	}
	return sc, nil
}

// DeleteCheckpoint removes session id's checkpoint (no error when there
// is none).
func (b *Bucket) DeleteCheckpoint(ctx context.Context, id string) error {
	if !validID(id) {
		return fmt.Errorf("invalid session id %q", id)
	}
	for _, name := range []string{b.activeSidecarName(id), b.activeRecName(id)} {
		if err := b.client.RemoveObject(ctx, b.bucket, name, minio.RemoveObjectOptions{}); err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
			return fmt.Errorf("delete checkpoint %s: %w", name, err)
		}
	}
	return nil
}

// Checkpoints returns the IDs of the sessions with a checkpoint under
// active/, sorted.
func (b *Bucket) Checkpoints(ctx context.Context) ([]string, error) {
	var ids []string
	for obj := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: b.prefix + activeDir}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("list %s: %w", b, obj.Err)
		}
		rest := strings.TrimPrefix(obj.Key, b.prefix+activeDir)
		if id, ok := strings.CutSuffix(rest, sidecarSuffix); ok && !strings.Contains(rest, "/") {
			ids = append(ids, id)
		}
	}
	return ids, nil
}
