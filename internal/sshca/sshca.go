// Package sshca is the runner's Sluice SSH host CA: the ed25519 key the SSH
// decoder signs the host certificates it presents to jobs with, kept as an
// OpenSSH private key file in the daemon's data directory, and the
// `@cert-authority` line of the system-wide known_hosts file through which
// the runner's ssh clients trust it.
//
// The key is created once per runner, by `sluice install` or by sluiced on
// its first start, whichever comes first; both go through LoadOrCreate, so
// they end up with the same key. The known_hosts line is managed: install
// writes it below a marker comment naming the installation, and uninstall
// removes exactly that, leaving the rest of the file byte for byte.
package sshca

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/sluicehq/sluice/internal/atomicfile"
	"golang.org/x/crypto/ssh"
)

// KeyFile is the name of the CA key in the daemon's data directory.
const KeyFile = "ssh_host_ca"

// Comment names the CA in its key file, its public key line and its
// known_hosts line.
const Comment = "sluice-ssh-host-ca"

// LoadOrCreate returns the CA key kept at path, an OpenSSH private key
// file, creating it when path does not exist: a new ed25519 key, mode
// 0600, owned by the calling user (root, for sluiced and sluice install),
// in a directory created 0700 if missing. created reports whether this
// call made the key.
//
// An existing file is refused, with the fix in the error, when group or
// others have any access to it, when it belongs to another user than the
// caller or root, when it is not a regular file, or when it does not hold
// an unencrypted ed25519 key (see Load).
//
// Creation is atomic and free of races: the key is written and synced to a
// temporary file that is then linked into place, and link, unlike rename,
// never replaces a file. Of two processes creating the key at once one
// wins and the other loads the winner's key.
func LoadOrCreate(path string) (key ed25519.PrivateKey, created bool, err error) {
	key, err = Load(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return key, false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create ssh host ca: %w", err)
	}
	_, key, err = ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("create ssh host ca: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(key, Comment)
	if err != nil {
		return nil, false, fmt.Errorf("create ssh host ca: %w", err)
	}
	tmp, err := atomicfile.WriteTemp(dir, "."+filepath.Base(path)+".tmp*", pem.EncodeToMemory(block), 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("create ssh host ca: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, path); errors.Is(err, fs.ErrExist) {
		key, err = Load(path) // another process created it first: use theirs
		return key, false, err
	} else if err != nil {
		return nil, false, fmt.Errorf("create ssh host ca: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, false, fmt.Errorf("create ssh host ca: %w", err)
	}
	return key, true, nil
}

// Load returns the CA key kept at path without creating it. A missing
// file is an error wrapping fs.ErrNotExist. The file must be a regular
// file (not a symlink) of mode 0600 or stricter, owned by the caller or
// root, holding one unencrypted ed25519 key in a PEM format
// ssh.ParseRawPrivateKey reads: the OpenSSH format that LoadOrCreate
// writes, as does ssh-keygen -t ed25519 with an empty passphrase.
func Load(path string) (ed25519.PrivateKey, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("load ssh host ca: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("load ssh host ca: %s is not a regular file (%s): replace it with the key file itself", path, fi.Mode().Type())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("load ssh host ca: %s has mode %04o, so other users may read or change the key that every ssh client of this runner trusts: run chmod 600 %s", path, perm, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("load ssh host ca: %s belongs to uid %d, who could replace the key: run chown root: %s", path, st.Uid, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load ssh host ca: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(data)
	var missing *ssh.PassphraseMissingError
	switch {
	case errors.As(err, &missing):
		return nil, fmt.Errorf("load ssh host ca: %s is encrypted: sluiced needs it without a passphrase (ssh-keygen -p -N '' -f %s)", path, path)
	case err != nil:
		return nil, fmt.Errorf("load ssh host ca: parse %s: %w; remove it to create a new CA (then run sluice install again so that ssh clients trust the new one)", path, err)
	}
	var key ed25519.PrivateKey
	switch k := raw.(type) {
	case ed25519.PrivateKey:
		key = k
	case *ed25519.PrivateKey:
		key = *k
	default:
		return nil, fmt.Errorf("load ssh host ca: %s holds a %s key, not ed25519: remove it to create a new CA (then run sluice install again)", path, keyType(raw))
	}
	if len(key) != ed25519.PrivateKeySize || !ed25519.NewKeyFromSeed(key.Seed()).Equal(key) {
		return nil, fmt.Errorf("load ssh host ca: %s: the private and public halves of the key do not match: remove it to create a new CA (then run sluice install again)", path)
	}
	return key, nil
}

// keyType names a parsed private key's type for an error message.
func keyType(k any) string {
	if s, ok := k.(crypto.Signer); ok {
		if pk, err := ssh.NewPublicKey(s.Public()); err == nil {
			return pk.Type()
		}
	}
	return strings.TrimPrefix(fmt.Sprintf("%T", k), "*")
}

// PublicLine returns the CA's public key in authorized_keys form, with
// Comment: "ssh-ed25519 AAAA... sluice-ssh-host-ca", without a newline.
// It panics if pub is not an ed25519 public key of the right size, which
// is a programming error.
func PublicLine(pub ed25519.PublicKey) string {
	pk, err := ssh.NewPublicKey(pub)
	if err != nil {
		panic("sshca: " + err.Error())
	}
	return string(bytes.TrimSuffix(ssh.MarshalAuthorizedKey(pk), []byte("\n"))) + " " + Comment
}

// KnownHostsLine returns the known_hosts line that makes ssh clients trust
// host certificates of the CA for every host: "@cert-authority *
// ssh-ed25519 AAAA... sluice-ssh-host-ca", without a newline.
func KnownHostsLine(pub ed25519.PublicKey) string {
	return "@cert-authority * " + PublicLine(pub)
}
