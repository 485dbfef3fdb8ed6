package credential

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/ruleset"
)

const secret = "s3cr3t-Pa55"

func cred(src ruleset.SecretSource) *ruleset.Credential {
	return &ruleset.Credential{Name: "app", Target: "db", User: "app", Source: src}
}

func TestFetchFile(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("password files must be owned by root; run as root")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "pw")
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	st := NewStore()
	s, err := st.Fetch(context.Background(), cred(ruleset.SecretSource{File: path}))
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Bytes()) != secret {
		t.Fatalf("got %q", s.Bytes())
	}
	// Rotation: replacing the file changes the next fetch.
	if err := os.WriteFile(path, []byte("rotated"), 0o600); err != nil {
		t.Fatal(err)
	}
	s2, err := st.Fetch(context.Background(), cred(ruleset.SecretSource{File: path}))
	if err != nil || string(s2.Bytes()) != "rotated" {
		t.Fatalf("after rotation got %q, %v", s2.Bytes(), err)
	}
	s.Wipe()
	if s.Bytes() != nil {
		t.Fatal("Wipe left the bytes reachable")
	}

	for _, tc := range []struct {
		name string
		mode os.FileMode
		want string
	}{
		{"group readable", 0o640, "has mode 0640"},
		{"world readable", 0o604, "has mode 0604"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Chmod(path, tc.mode)
			_, err := st.Fetch(context.Background(), cred(ruleset.SecretSource{File: path}))
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "rotated") {
				t.Fatalf("got %v, want an error containing %q and no secret", err, tc.want)
			}
		})
	}
	os.Chmod(path, 0o600)
	os.Chown(path, 65534, 65534)
	if _, err := st.Fetch(context.Background(), cred(ruleset.SecretSource{File: path})); err == nil || !strings.Contains(err.Error(), "not root") {
		t.Fatalf("file owned by nobody: got %v", err)
	}
	if _, err := st.Fetch(context.Background(), cred(ruleset.SecretSource{File: filepath.Join(dir, "missing")})); err == nil {
		t.Fatal("missing file: no error")
	}
}

func TestFetchEnv(t *testing.T) {
	st := NewStore()
	st.LookupEnv = func(k string) (string, bool) {
		if k == "DB_PW" {
			return secret, true
		}
		return "", false
	}
	s, err := st.Fetch(context.Background(), cred(ruleset.SecretSource{Env: "DB_PW"}))
	if err != nil || string(s.Bytes()) != secret {
		t.Fatalf("got %q, %v", s.Bytes(), err)
	}
	if _, err := st.Fetch(context.Background(), cred(ruleset.SecretSource{Env: "UNSET"})); err == nil || !strings.Contains(err.Error(), "UNSET") {
		t.Fatalf("unset variable: got %v", err)
	}
}

func TestFetchCommand(t *testing.T) {
	dir := t.TempDir()
	counter := filepath.Join(dir, "runs")
	script := filepath.Join(dir, "token.sh")
	// Prints a fresh token each run and counts its runs.
	body := fmt.Sprintf("#!/bin/sh\necho x >> %s\necho \"tok-$(wc -l < %s | tr -d ' ')\"\n", counter, counter)
	if err := os.WriteFile(script, []byte(body), 0o700); err != nil {
		t.Fatal(err)
	}
	st := NewStore()
	c := cred(ruleset.SecretSource{Command: []string{script}})
	a, err := st.Fetch(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.Fetch(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Bytes()) != "tok-1" || string(b.Bytes()) != "tok-2" {
		t.Fatalf("without cache_for every fetch runs the command: got %q, %q", a.Bytes(), b.Bytes())
	}
	cc := cred(ruleset.SecretSource{Command: []string{script}, CacheFor: time.Minute})
	x, _ := st.Fetch(context.Background(), cc)
	y, _ := st.Fetch(context.Background(), cc)
	if string(x.Bytes()) != "tok-3" || string(y.Bytes()) != "tok-3" {
		t.Fatalf("with cache_for the token is reused: got %q, %q", x.Bytes(), y.Bytes())
	}

	// A failing command's output never reaches the error.
	fail := filepath.Join(dir, "fail.sh")
	os.WriteFile(fail, []byte("#!/bin/sh\necho "+secret+"\necho "+secret+" >&2\nexit 3\n"), 0o700)
	_, err = st.Fetch(context.Background(), cred(ruleset.SecretSource{Command: []string{fail}}))
	if err == nil || strings.Contains(err.Error(), secret) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("failing command: got %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := &Secret{b: []byte(secret)}
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s %q %x", s, s, s, s, s, s)} {
		if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
			t.Fatalf("secret printed: %s", out)
		}
	}
}
