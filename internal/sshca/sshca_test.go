package sshca

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"
)

// TestLoadOrCreate: a missing key is created (0600, in a new 0700
// directory, in OpenSSH's format, which ssh-keygen reads), and later calls
// load the same key.
func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", KeyFile)
	key, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("LoadOrCreate = created %v, %v; want a new key", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o700 {
		t.Errorf("created directory has mode %v, want 0700", di.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if b, _ := pem.Decode(data); b == nil || b.Type != "OPENSSH PRIVATE KEY" {
		t.Errorf("key file is not an OpenSSH private key:\n%s", data)
	}
	again, created, err := LoadOrCreate(path)
	if err != nil || created || !again.Equal(key) {
		t.Errorf("second LoadOrCreate: created %v, same key %v, %v", created, again.Equal(key), err)
	}
	if loaded, err := Load(path); err != nil || !loaded.Equal(key) {
		t.Errorf("Load: %v", err)
	}
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command("ssh-keygen", "-y", "-f", path).Output()
		want := PublicLine(key.Public().(ed25519.PublicKey))
		if err != nil || strings.Fields(string(out))[1] != strings.Fields(want)[1] {
			t.Errorf("ssh-keygen -y: %q (%v); want the key of %q", out, err, want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), KeyFile)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
}

// TestLoadOrCreateRace: processes creating the key at once agree on one.
func TestLoadOrCreateRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), KeyFile)
	const n = 16
	keys := make([]ed25519.PrivateKey, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			keys[i], created[i], errs[i] = LoadOrCreate(path)
		}()
	}
	close(start)
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if !keys[i].Equal(keys[0]) {
			t.Errorf("caller %d got another key", i)
		}
		if created[i] {
			creators++
		}
	}
	if creators != 1 {
		t.Errorf("%d callers say they created the key, want 1", creators)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*tmp*")); len(m) > 0 {
		t.Errorf("temporary files left: %q", m)
	}
}

// TestLoadRefuses: a key file others may read, a symlink, a key of another
// type, an encrypted key, garbage and a key owned by another user are
// refused with the fix, and never replaced.
func TestLoadRefuses(t *testing.T) {
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := ssh.MarshalPrivateKey(edKey, Comment)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	rsaBlock, _ := ssh.MarshalPrivateKey(rsaKey, "")
	enc, _ := ssh.MarshalPrivateKeyWithPassphrase(edKey, "", []byte("secret"))
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, path string)
		want  string
	}{
		{"group readable", func(t *testing.T, p string) { os.WriteFile(p, pem.EncodeToMemory(good), 0o640) }, "chmod 600 " + "PATH"},
		{"others readable", func(t *testing.T, p string) { os.WriteFile(p, pem.EncodeToMemory(good), 0o604) }, "mode 0604"},
		{"symlink", func(t *testing.T, p string) {
			real := filepath.Join(filepath.Dir(p), "real")
			os.WriteFile(real, pem.EncodeToMemory(good), 0o600)
			os.Symlink(real, p)
		}, "not a regular file"},
		{"rsa", func(t *testing.T, p string) { os.WriteFile(p, pem.EncodeToMemory(rsaBlock), 0o600) }, "holds a ssh-rsa key, not ed25519"},
		{"encrypted", func(t *testing.T, p string) { os.WriteFile(p, pem.EncodeToMemory(enc), 0o600) }, "is encrypted"},
		{"garbage", func(t *testing.T, p string) { os.WriteFile(p, []byte("not a key\n"), 0o600) }, "parse PATH"},
		{"other owner", func(t *testing.T, p string) {
			if os.Geteuid() != 0 {
				t.Skip("needs root to give the file to another user")
			}
			os.WriteFile(p, pem.EncodeToMemory(good), 0o600)
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "belongs to uid 65534"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), KeyFile)
			tc.setup(t, path)
			before, _ := os.ReadFile(path)
			_, created, err := LoadOrCreate(path)
			want := strings.ReplaceAll(tc.want, "PATH", path)
			if err == nil || created || !strings.Contains(err.Error(), want) {
				t.Fatalf("LoadOrCreate: created %v, %v; want an error containing %q", created, err, want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				t.Error("the refused file was changed")
			}
		})
	}
}

// TestPublicLine: the public key and known_hosts lines parse back, with
// the key and the comment, as OpenSSH's formats.
func TestPublicLine(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	pk, _ := ssh.NewPublicKey(pub)
	line := PublicLine(pub)
	got, comment, _, rest, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil || !bytes.Equal(got.Marshal(), pk.Marshal()) || comment != Comment || len(rest) != 0 || strings.Contains(line, "\n") {
		t.Errorf("PublicLine %q parses as %v, %q, %v", line, got, comment, err)
	}
	kh := KnownHostsLine(pub)
	marker, hosts, got, comment, _, err := ssh.ParseKnownHosts([]byte(kh + "\n"))
	if err != nil || marker != "cert-authority" || len(hosts) != 1 || hosts[0] != "*" || !bytes.Equal(got.Marshal(), pk.Marshal()) || comment != Comment {
		t.Errorf("KnownHostsLine %q parses as %q %q %v %q, %v", kh, marker, hosts, got, comment, err)
	}
	if !strings.HasPrefix(kh, "@cert-authority * ssh-ed25519 ") || !strings.HasSuffix(kh, " sluice-ssh-host-ca") {
		t.Errorf("KnownHostsLine = %q", kh)
	}
}
