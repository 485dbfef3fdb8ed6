package sshca

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newPub(t *testing.T) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestMarker: the default installation's marker is the plain sentence;
// another's names the uninstall that removes it, quoted when it must be.
func TestMarker(t *testing.T) {
	for name, want := range map[string]string{
		"":        "# sluice: SSH host CA of this runner (sluice install; removed by sluice uninstall)",
		"default": "# sluice: SSH host CA of this runner (sluice install; removed by sluice uninstall)",
		"ci-2":    "# sluice: SSH host CA of this runner (sluice install; removed by sluice uninstall --name ci-2)",
		"a b\n":   `# sluice: SSH host CA of this runner (sluice install; removed by sluice uninstall --name "a b\n")`,
	} {
		if got := Marker(name); got != want {
			t.Errorf("Marker(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestAddRemoveLine: adding and removing the managed line keeps every
// other byte of the file, is idempotent, replaces an older key in place,
// leaves an operator's own lines and other installations' lines alone.
func TestAddRemoveLine(t *testing.T) {
	k1, k2 := newPub(t), newPub(t)
	block := func(name string, k ed25519.PublicKey) string { return Marker(name) + "\n" + KnownHostsLine(k) + "\n" }
	const other = "# hosts of the deploy team\ngit.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n\n"

	for _, tc := range []struct {
		name     string
		old      string
		key      ed25519.PublicKey
		want     string
		change   Change
		removed  string // the file after RemoveLine of the result
		rmChange Change
	}{
		{"empty file", "", k1, block("", k1), Added, "", Removed},
		{"after other lines", other, k1, other + block("", k1), Added, other, Removed},
		{"no final newline", "a b c", k1, "a b c\n" + block("", k1), Added, "a b c\n", Removed},
		{"CRLF lines kept", "x\r\ny\r\n", k1, "x\r\ny\r\n" + block("", k1), Added, "x\r\ny\r\n", Removed},
		{"already there", other + block("", k1) + "tail\n", k1, other + block("", k1) + "tail\n", Unchanged, other + "tail\n", Removed},
		{"older key replaced in place", other + block("", k2) + "tail\n", k1, other + block("", k1) + "tail\n", Replaced, other + "tail\n", Removed},
		{"edited line replaced", block("", k1)[:len(Marker(""))+1] + "@cert-authority *.corp " + PublicLine(k1) + "\n", k1, block("", k1), Replaced, "", Removed},
		{"copies dropped", block("", k2) + other + block("", k1), k1, block("", k1) + other, Replaced, other, Removed},
		{"marker without its line", Marker("") + "\n" + other, k1, block("", k1) + other, Added, other, Removed},
		{"an operator's line", other + KnownHostsLine(k1) + "\n", k1, other + KnownHostsLine(k1) + "\n", Present, other + KnownHostsLine(k1) + "\n", Unchanged},
		{"an operator's line for a few hosts only", "@cert-authority *.corp " + PublicLine(k1) + "\n", k1, "@cert-authority *.corp " + PublicLine(k1) + "\n" + block("", k1), Added, "@cert-authority *.corp " + PublicLine(k1) + "\n", Removed},
		{"another installation's line stays", block("ci", k2), k1, block("ci", k2) + block("", k1), Added, block("ci", k2), Removed},
		{"another installation's line for the same key", block("ci", k1), k1, block("ci", k1) + block("", k1), Added, block("ci", k1), Removed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, change := AddLine([]byte(tc.old), "default", tc.key)
			if string(got) != tc.want || change != tc.change {
				t.Fatalf("AddLine = %s\n%q\nwant %s\n%q", change, got, tc.change, tc.want)
			}
			if again, c := AddLine(got, "", tc.key); string(again) != string(got) || (c != Unchanged && c != Present) {
				t.Errorf("second AddLine: %s, changed %v", c, string(again) != string(got))
			}
			if !Trusted(got, tc.key) {
				t.Error("the result does not trust the key")
			}
			rm, c := RemoveLine(got, "")
			if string(rm) != tc.removed || c != tc.rmChange {
				t.Errorf("RemoveLine = %s\n%q\nwant %s\n%q", c, rm, tc.rmChange, tc.removed)
			}
			if again, c := RemoveLine(rm, ""); string(again) != string(rm) || c != Unchanged {
				t.Errorf("second RemoveLine: %s", c)
			}
		})
	}
}

// TestTrusted: what counts as trusting the CA for every host.
func TestTrusted(t *testing.T) {
	k, other := newPub(t), newPub(t)
	for _, tc := range []struct {
		name, data string
		want       bool
	}{
		{"the line", KnownHostsLine(k) + "\n", true},
		{"in a host list", "@cert-authority host1,*,!bad " + PublicLine(k) + "\n", true},
		{"indented, no comment", "  @cert-authority * " + strings.Join(strings.Fields(PublicLine(k))[:2], " "), true},
		{"commented out", "# " + KnownHostsLine(k) + "\n", false},
		{"some hosts only", "@cert-authority *.corp " + PublicLine(k) + "\n", false},
		{"a plain host key", "* " + PublicLine(k) + "\n", false},
		{"another key", KnownHostsLine(other) + "\n", false},
		{"revoked", KnownHostsLine(k) + "\n@revoked * " + PublicLine(k) + "\n", false},
		{"after a malformed line", "@cert-authority * ssh-ed25519 !!!\n" + KnownHostsLine(k) + "\n", true},
		{"empty", "", false},
	} {
		if got := Trusted([]byte(tc.data), k); got != tc.want {
			t.Errorf("%s: Trusted = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAddToFile: a new file (and directory) is 0644 (0755); an existing
// file keeps its mode and bytes; a symlink stays a symlink; removing from
// a missing file creates nothing; add then remove restores the file.
func TestAddToFile(t *testing.T) {
	k1, k2 := newPub(t), newPub(t)
	dir := t.TempDir()

	path := filepath.Join(dir, "etc", "ssh", "ssh_known_hosts")
	if c, err := RemoveFromFile(path, ""); c != Unchanged || err != nil {
		t.Errorf("remove from a missing file: %s, %v", c, err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("remove from a missing file created it (%v)", err)
	}
	if c, err := AddToFile(path, "", k1); c != Added || err != nil {
		t.Fatalf("AddToFile on a missing file: %s, %v", c, err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("new file mode %v, want 0644", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm() != 0o755 {
		t.Errorf("new directory mode %v, want 0755", di.Mode().Perm())
	}
	if c, err := AddToFile(path, "", k1); c != Unchanged || err != nil {
		t.Errorf("second AddToFile: %s, %v", c, err)
	}

	orig := "# mine\nhost1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
	own := filepath.Join(dir, "own_known_hosts")
	os.WriteFile(own, []byte(orig), 0o600)
	link := filepath.Join(dir, "link_known_hosts")
	os.Symlink(own, link)
	for _, k := range []ed25519.PublicKey{k1, k2} {
		if _, err := AddToFile(link, "", k); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := os.ReadFile(own)
	if want := orig + "\n" + Marker("") + "\n" + KnownHostsLine(k2) + "\n"; string(got) != want {
		t.Errorf("file through the symlink:\n%q\nwant\n%q", got, want)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink == 0 {
		t.Error("the symlink was replaced by a file")
	}
	if fi, _ := os.Stat(own); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 kept", fi.Mode().Perm())
	}
	if c, err := RemoveFromFile(link, ""); c != Removed || err != nil {
		t.Fatalf("RemoveFromFile: %s, %v", c, err)
	}
	if got, _ := os.ReadFile(own); string(got) != orig+"\n" {
		t.Errorf("after removal:\n%q\nwant the original (with its last line ended)\n%q", got, orig+"\n")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(m) > 0 {
		t.Errorf("temporary files left: %q", m)
	}
}
