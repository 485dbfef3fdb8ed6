// Package credential reads the secrets Sluice injects into sessions in
// place of the client's own credentials: from a root-only file, an
// environment variable of the daemon, or a command the daemon runs to get
// a short-lived secret. It knows nothing of wire protocols, so every
// decoder that injects credentials (PostgreSQL and MySQL today; SSH later)
// shares it.
//
// Secrets are handled as byte slices that the caller wipes after use; a
// Secret never prints its value (String, GoString and Format redact it),
// and errors name the source (a path, a variable, a program) but never
// carry what it produced.
package credential

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/ruleset"
)

// MaxSecret bounds a secret's size; a larger one is refused as a likely
// misconfiguration (a certificate bundle, a log file).
const MaxSecret = 64 << 10

// CommandTimeout bounds a password_command run.
const CommandTimeout = 10 * time.Second

// Secret is a secret's bytes. Its zero value is empty. Wipe overwrites
// the bytes once the caller is done with them.
type Secret struct {
	b []byte
}

// Bytes returns the secret. The slice is valid until Wipe.
func (s *Secret) Bytes() []byte { return s.b }

// Wipe overwrites the secret's bytes with zeros.
func (s *Secret) Wipe() {
	clear(s.b)
	s.b = nil
}

// String returns a placeholder, never the secret.
func (s *Secret) String() string { return "[redacted]" }

// GoString returns a placeholder, never the secret.
func (s *Secret) GoString() string { return "[redacted]" }

// Format prints a placeholder for every verb, never the secret.
func (s *Secret) Format(f fmt.State, _ rune) { f.Write([]byte("[redacted]")) }

// Store fetches secrets and keeps those of password_command sources for
// their cache_for. It is safe for concurrent use; the zero value is not
// usable, use NewStore.
type Store struct {
	// LookupEnv reads the daemon's environment; os.LookupEnv by default.
	LookupEnv func(string) (string, bool)

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	secret  []byte
	expires time.Time
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{LookupEnv: os.LookupEnv, cache: map[string]cached{}}
}

// Fetch returns the credential's secret, read now (files and variables,
// so replacing a file rotates the secret for every new session) or from
// the cache (commands, within cache_for). The caller owns the returned
// Secret and should Wipe it.
func (st *Store) Fetch(ctx context.Context, c *ruleset.Credential) (*Secret, error) {
	src := c.Source
	var b []byte
	var err error
	switch {
	case src.File != "":
		b, err = readFile(src.File)
	case src.Env != "":
		v, ok := st.LookupEnv(src.Env)
		if !ok || v == "" {
			err = fmt.Errorf("environment variable %s of the daemon is not set", src.Env)
		}
		b = []byte(v)
	case len(src.Command) > 0:
		b, err = st.command(ctx, c)
	default:
		err = errors.New("the credential has no password source")
	}
	if err != nil {
		return nil, fmt.Errorf("credential %s of target %s: %w", c.Name, c.Target, err)
	}
	b = bytes.TrimRight(b, "\r\n")
	if len(b) == 0 {
		return nil, fmt.Errorf("credential %s of target %s: the %s is empty", c.Name, c.Target, src)
	}
	return &Secret{b: b}, nil
}

// readFile reads a secret file that only root may read: it must be a
// regular file owned by uid 0 with no group or other permissions, like
// ssh's private keys.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open password file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat password file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("password file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("password file %s has mode %04o, so users other than root can reach it; chmod 600 it", path, perm)
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 {
		return nil, fmt.Errorf("password file %s is owned by uid %d, not root; chown root it", path, sys.Uid)
	}
	if fi.Size() > MaxSecret {
		return nil, fmt.Errorf("password file %s is %d bytes, more than %d", path, fi.Size(), MaxSecret)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSecret+1))
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("read password file %s: %w", path, err)
	}
	return b, nil
}

// command runs the credential's password_command, or returns its cached
// output. The command's output and standard error are never put into
// errors: a failing helper may print the secret it half-fetched.
func (st *Store) command(ctx context.Context, c *ruleset.Credential) ([]byte, error) {
	key := c.Target + "\x00" + c.Name + "\x00" + fmt.Sprintf("%q", c.Source.Command)
	if c.Source.CacheFor > 0 {
		st.mu.Lock()
		e, ok := st.cache[key]
		st.mu.Unlock()
		if ok && time.Now().Before(e.expires) {
			return bytes.Clone(e.secret), nil
		}
	}
	ctx, cancel := context.WithTimeout(ctx, CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Source.Command[0], c.Source.Command[1:]...)
	var out limitedBuffer
	cmd.Stdout = &out
	cmd.Stdin = nil
	cmd.Stderr = nil
	err := cmd.Run()
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		clear(out.b)
		return nil, fmt.Errorf("password command %s did not finish within %s", c.Source.Command[0], CommandTimeout)
	case err != nil:
		clear(out.b)
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("password command %s failed: %s", c.Source.Command[0], ee.ProcessState)
		}
		return nil, fmt.Errorf("run password command %s: %w", c.Source.Command[0], err)
	case out.over:
		clear(out.b)
		return nil, fmt.Errorf("password command %s printed more than %d bytes", c.Source.Command[0], MaxSecret)
	}
	if c.Source.CacheFor > 0 {
		st.mu.Lock()
		if old, ok := st.cache[key]; ok {
			clear(old.secret)
		}
		st.cache[key] = cached{secret: bytes.Clone(out.b), expires: time.Now().Add(c.Source.CacheFor)}
		st.mu.Unlock()
	}
	return out.b, nil
}

// limitedBuffer keeps at most MaxSecret bytes.
type limitedBuffer struct {
	b    []byte
	over bool
}

func (w *limitedBuffer) Write(p []byte) (int, error) {
	if len(w.b)+len(p) > MaxSecret {
		w.over = true
		return len(p), nil
	}
	w.b = append(w.b, p...)
	return len(p), nil
}
