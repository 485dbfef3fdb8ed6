package s3

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/sluicehq/sluice/enforcer/record"
)

// A fleet signing key vouches for the recording keys of the fleet's VMs.
// At start each VM publishes its recording public key, signed with the
// fleet's private key, as
//
//	PREFIX/keys/VM/KEYID.json   a KeyEndorsement
//
// (KEYID is record.KeyID of the public key). A reader holding the fleet
// public key then checks each recording against the key endorsed for the
// VM its sidecar names (CheckFleet): a recording signed with a key of a
// forger's own, who can write to the bucket but has not the fleet's
// private key, has no valid endorsement and is reported forged.
//
// What it does not protect against: the fleet private key is read by
// every VM at start, so root on a VM while it holds the key can endorse
// any key for any VM name.

// endorsementVersion is the KeyEndorsement format's version.
const endorsementVersion = 1

// keysDir is the folder of key endorsements under the prefix.
const keysDir = "keys/"

// ErrForged is wrapped by CheckFleet's errors for a recording whose key
// the fleet key does not vouch for.
var ErrForged = errors.New("not vouched for by the fleet key")

// KeyEndorsement is a VM's recording public key signed by the fleet key.
type KeyEndorsement struct {
	Version int `json:"version"`
	// VM is the name of the VM the key belongs to.
	VM string `json:"vm"`
	// PublicKey is the recording public key (base64, as in
	// record.MarshalPublicKey without the newline); KeyID its
	// record.KeyID.
	PublicKey string `json:"public_key"`
	KeyID     string `json:"key_id"`
	// FirstSeen is when the VM first published the key.
	FirstSeen time.Time `json:"first_seen"`
	// FleetKeyID is record.KeyID of the fleet public key that signed.
	FleetKeyID string `json:"fleet_key_id"`
	// Signature is the fleet key's ed25519 signature (base64) of
	// endorsementMessage.
	Signature string `json:"signature"`
}

// endorsementMessage is what the fleet key signs: every field a reader
// relies on, each on its own line after a domain separator.
func endorsementMessage(e *KeyEndorsement) []byte {
	return []byte(strings.Join([]string{"sluice fleet recording key v1", e.VM, e.PublicKey, e.KeyID, e.FirstSeen.UTC().Format(time.RFC3339Nano)}, "\n"))
}

// Endorse signs vm's recording public key pub with the fleet private key.
func Endorse(fleet ed25519.PrivateKey, vm string, pub ed25519.PublicKey, firstSeen time.Time) (*KeyEndorsement, error) {
	if !validID(vm) {
		return nil, fmt.Errorf("endorse recording key: invalid vm name %q: use letters, digits, '-', '_' and '.' only", vm)
	}
	e := &KeyEndorsement{Version: endorsementVersion, VM: vm, PublicKey: base64.StdEncoding.EncodeToString(pub),
		KeyID: record.KeyID(pub), FirstSeen: firstSeen.UTC(), FleetKeyID: record.KeyID(fleet.Public().(ed25519.PublicKey))}
	e.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(fleet, endorsementMessage(e)))
	return e, nil
}

// Check verifies e's signature with the fleet public key and returns the
// recording public key it vouches for.
func (e *KeyEndorsement) Check(fleet ed25519.PublicKey) (ed25519.PublicKey, error) {
	if e.Version != endorsementVersion {
		return nil, fmt.Errorf("key endorsement version %d, want %d", e.Version, endorsementVersion)
	}
	sig, err := base64.StdEncoding.DecodeString(e.Signature)
	if err != nil || !ed25519.Verify(fleet, endorsementMessage(e), sig) {
		return nil, fmt.Errorf("the key endorsement of vm %q is not signed by fleet key %.16s: %w", e.VM, record.KeyID(fleet), ErrForged)
	}
	pub, err := base64.StdEncoding.DecodeString(e.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize || record.KeyID(pub) != e.KeyID {
		return nil, fmt.Errorf("the key endorsement of vm %q holds a malformed key", e.VM)
	}
	return ed25519.PublicKey(pub), nil
}

func (b *Bucket) keyName(vm, keyID string) string {
	return b.prefix + keysDir + vm + "/" + keyID + sidecarSuffix
}

// PublishKey puts e under keys/VM/KEYID.json (with the retention of a
// recording) unless a valid endorsement of the same key for the same VM
// by the same fleet key is there already. It reports whether it wrote.
func (b *Bucket) PublishKey(ctx context.Context, e *KeyEndorsement, fleet ed25519.PublicKey) (bool, error) {
	if old, err := b.ReadKey(ctx, e.VM, e.KeyID); err == nil {
		if _, err := old.Check(fleet); err == nil && old.PublicKey == e.PublicKey {
			return false, nil
		}
	} else if !errors.Is(err, ErrNotFound) {
		return false, err
	}
	js, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return false, err
	}
	opts, err := b.putOptions(ctx, "application/json")
	if err != nil {
		return false, err
	}
	if _, err := b.client.PutObject(ctx, b.bucket, b.keyName(e.VM, e.KeyID), bytes.NewReader(js), int64(len(js)), opts); err != nil {
		return false, fmt.Errorf("publish the recording key of vm %s: %w", e.VM, err)
	}
	return true, nil
}

// ReadKey reads the endorsement of key keyID for vm, or ErrNotFound.
func (b *Bucket) ReadKey(ctx context.Context, vm, keyID string) (*KeyEndorsement, error) {
	if !validID(vm) || !validID(keyID) {
		return nil, fmt.Errorf("read key endorsement: invalid vm %q or key id %q", vm, keyID)
	}
	name := b.keyName(vm, keyID)
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
	var e KeyEndorsement
	if err := json.Unmarshal(js, &e); err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if e.VM != vm || e.KeyID != keyID {
		return nil, fmt.Errorf("read %s: it endorses key %.16s of vm %q: %w", name, e.KeyID, e.VM, ErrForged)
	}
	return &e, nil
}

// CheckFleet returns the recording public key the fleet key vouches for
// as sc's VM's: the endorsement keys/VM/KEYID.json of the key sc names
// must be there and signed by fleet. An error wrapping ErrForged means
// the recording's key is not the fleet's; others mean the store could
// not be read.
func (b *Bucket) CheckFleet(ctx context.Context, sc *Sidecar, fleet ed25519.PublicKey) (ed25519.PublicKey, *KeyEndorsement, error) {
	if sc.VM == "" {
		return nil, nil, fmt.Errorf("its sidecar names no vm (uploaded without a fleet key): %w", ErrForged)
	}
	pub, err := record.ParsePublicKey([]byte(sc.PublicKey))
	if err != nil {
		return nil, nil, fmt.Errorf("its sidecar's public key does not parse (%v): %w", err, ErrForged)
	}
	e, err := b.ReadKey(ctx, sc.VM, record.KeyID(pub))
	if errors.Is(err, ErrNotFound) {
		return nil, nil, fmt.Errorf("key %.16s is not published for vm %q: %w", record.KeyID(pub), sc.VM, ErrForged)
	} else if err != nil {
		return nil, nil, err
	}
	endorsed, err := e.Check(fleet)
	if err != nil {
		return nil, nil, err
	}
	if !endorsed.Equal(pub) {
		return nil, nil, fmt.Errorf("the endorsed key of vm %q is not the sidecar's: %w", sc.VM, ErrForged)
	}
	return endorsed, e, nil
}
