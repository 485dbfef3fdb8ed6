package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/internal/sshca"
)

const otherHost = "# the deploy team's hosts\ngit.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"

// TestInstallSSH: install creates the SSH host CA in the data_dir of the
// config it writes and adds the CA's line, for the config's installation,
// to the known_hosts file, after the lines already there; a second run
// changes nothing; --dry-run and --ssh off write nothing; uninstall takes
// the line out again and leaves the key.
func TestInstallSSH(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	kh := filepath.Join(dir, "etc", "ssh", "ssh_known_hosts")
	os.MkdirAll(filepath.Dir(kh), 0o755)
	os.WriteFile(kh, []byte(otherHost), 0o644)
	conf := []byte("data_dir = \"" + data + "\"\ncgroup = \"runner.service\"\n")
	keyPath := filepath.Join(data, sshca.KeyFile)

	var out strings.Builder
	if err := installSSH("on", kh, "sluiced.hcl", conf, true, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "would create the SSH host CA "+keyPath) {
		t.Errorf("--dry-run said:\n%s", out.String())
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("--dry-run created the data directory (%v)", err)
	}

	out.Reset()
	if err := installSSH("on", kh, "sluiced.hcl", conf, false, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ssh: created the SSH host CA " + keyPath, "ssh: added the SSH host CA's @cert-authority line to " + kh} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("install output lacks %q:\n%s", want, out.String())
		}
	}
	key, err := sshca.Load(keyPath)
	if err != nil {
		t.Fatalf("the CA sluiced will load: %v", err)
	}
	pub := key.Public().(ed25519.PublicKey)
	want := otherHost + sshca.Marker("default") + "\n" + sshca.KnownHostsLine(pub) + "\n"
	if got, _ := os.ReadFile(kh); string(got) != want {
		t.Errorf("known_hosts:\n%s\nwant:\n%s", got, want)
	}

	for _, dry := range []bool{false, true} {
		out.Reset()
		if err := installSSH("on", kh, "sluiced.hcl", conf, dry, &out); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "already trusts") || strings.Contains(out.String(), "created") {
			t.Errorf("second run (dry-run %v) said:\n%s", dry, out.String())
		}
		if got, _ := os.ReadFile(kh); string(got) != want {
			t.Errorf("second run (dry-run %v) changed known_hosts:\n%s", dry, got)
		}
	}

	out.Reset()
	off := filepath.Join(dir, "untouched")
	if err := installSSH("off", off, "sluiced.hcl", conf, false, &out); err != nil || !strings.Contains(out.String(), "--ssh off") || !strings.Contains(out.String(), "sluice ssh-ca") {
		t.Errorf("--ssh off: %v, said:\n%s", err, out.String())
	}
	if _, err := os.Stat(off); !os.IsNotExist(err) {
		t.Error("--ssh off wrote the known_hosts file")
	}

	// Another installation's line goes beside this one, under its own
	// marker, and `sluice uninstall --name` takes out that one alone.
	name := "sluice-test-" + randHex(t)
	if err := installSSH("on", kh, "other.hcl", append([]byte("name = \""+name+"\"\n"), conf...), false, &out); err != nil {
		t.Fatal(err)
	}
	withOther, _ := os.ReadFile(kh)
	if !strings.Contains(string(withOther), sshca.Marker(name)+"\n") || !strings.HasPrefix(string(withOther), want) {
		t.Fatalf("second installation's line:\n%s", withOther)
	}
	code, stdout, stderr := sluice(t, "uninstall", "--name", name, "--ssh-known-hosts", kh)
	if code != 0 || !strings.Contains(stdout, "removed the SSH host CA's @cert-authority line from "+kh) {
		t.Errorf("sluice uninstall: exit %d\n%s%s", code, stdout, stderr)
	}
	if got, _ := os.ReadFile(kh); string(got) != want {
		t.Errorf("after uninstall --name %s:\n%s\nwant:\n%s", name, got, want)
	}

	out.Reset()
	if err := uninstallSSH("on", kh, "default", &out); err != nil || !strings.Contains(out.String(), "removed") {
		t.Errorf("uninstall: %v, said %q", err, out.String())
	}
	if got, _ := os.ReadFile(kh); string(got) != otherHost {
		t.Errorf("after uninstall:\n%q\nwant the file as it was before install:\n%q", got, otherHost)
	}
	if _, err := os.Stat(keyPath); err != nil {
		t.Errorf("uninstall removed the CA key: %v", err)
	}

	for _, args := range [][]string{{"install", "--ssh", "maybe"}, {"uninstall", "--ssh", "maybe", "--name", name}} {
		if code, _, stderr := sluice(t, args...); code != 2 || !strings.Contains(stderr, "use on or off") {
			t.Errorf("%q: exit %d, %q; want a usage error", args, code, stderr)
		}
	}
}

// TestInstallSSHRefusesKey: install stops, naming the fix, on a CA key
// sluiced would refuse, and leaves known_hosts alone.
func TestInstallSSHRefusesKey(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, sshca.KeyFile)
	if _, _, err := sshca.LoadOrCreate(keyPath); err != nil {
		t.Fatal(err)
	}
	os.Chmod(keyPath, 0o644)
	kh := filepath.Join(dir, "ssh_known_hosts")
	var out strings.Builder
	err := installSSH("on", kh, "sluiced.hcl", []byte("data_dir = \""+dir+"\"\ncgroup = \"r\"\n"), false, &out)
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+keyPath) {
		t.Errorf("err %v, want the refusal with its fix", err)
	}
	if _, err := os.Stat(kh); !os.IsNotExist(err) {
		t.Error("known_hosts written for a refused key")
	}
}

// TestSSHCACmd: `sluice ssh-ca` prints the CA's known_hosts line (or with
// --pub its key), from --data-dir or the config's data_dir; as a non-root
// user it only reads, and says what to do when there is no CA yet.
func TestSSHCACmd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	run := func(root bool, args ...string) (int, string, string) {
		t.Helper()
		was := isRoot
		isRoot = func() bool { return root }
		defer func() { isRoot = was }()
		return sluice(t, append([]string{"ssh-ca"}, args...)...)
	}

	code, out, errOut := run(false, "--data-dir", dir)
	if code != 1 || out != "" || !strings.Contains(errOut, "sluice install") || !strings.Contains(errOut, "as root") {
		t.Errorf("no CA, not root: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Error("a non-root run created the data directory")
	}

	code, out, errOut = run(true, "--data-dir", dir)
	if code != 0 {
		t.Fatalf("root: exit %d: %s", code, errOut)
	}
	key, err := sshca.Load(filepath.Join(dir, sshca.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	if out != sshca.KnownHostsLine(pub)+"\n" {
		t.Errorf("stdout %q, want the known_hosts line %q", out, sshca.KnownHostsLine(pub))
	}
	if !strings.Contains(errOut, "/etc/ssh/ssh_known_hosts") {
		t.Errorf("stderr does not say where the line goes: %q", errOut)
	}

	conf := filepath.Join(t.TempDir(), "sluiced.hcl")
	os.WriteFile(conf, []byte("data_dir = \""+dir+"\"\ncgroup = \"r\"\n"), 0o644)
	if code, out, errOut := run(false, "--config", conf, "--pub"); code != 0 || out != sshca.PublicLine(pub)+"\n" {
		t.Errorf("--config --pub, not root: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, _ := run(false, "--data-dir", dir, "extra"); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
}

// TestDoctorSSHCA: doctor's ssh check, from a data_dir without a CA to a
// known_hosts file ssh reads that trusts it.
func TestDoctorSSHCA(t *testing.T) {
	dir := t.TempDir()
	cfg := daemon.Defaults(filepath.Join(dir, "sluiced.hcl"))
	cfg.DataDir = filepath.Join(dir, "data")
	kh := filepath.Join(dir, "ssh_known_hosts")

	if f := checkSSHCA(cfg, kh, nil); f.level != levelWarn || !strings.Contains(f.detail, "no SSH host CA") || !strings.Contains(f.fix, "sluice install") {
		t.Errorf("no CA: %+v", f)
	}
	_, older, _ := ed25519.GenerateKey(rand.Reader)
	sshca.AddToFile(kh, cfg.Name, older.Public().(ed25519.PublicKey))
	key, _, err := sshca.LoadOrCreate(filepath.Join(cfg.DataDir, sshca.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	line := sshca.KnownHostsLine(key.Public().(ed25519.PublicKey))
	f := checkSSHCA(cfg, kh, nil)
	if f.level != levelWarn || !strings.Contains(f.detail, "ssh clients will not trust Sluice's host certificates") || !strings.Contains(f.detail, "older") ||
		!strings.Contains(f.fix, "run sluice install or add this line to "+kh+": "+line) {
		t.Errorf("line of an older CA: %+v", f)
	}
	os.Remove(kh)
	if f := checkSSHCA(cfg, kh, nil); f.level != levelWarn || strings.Contains(f.detail, "older") || !strings.Contains(f.fix, line) {
		t.Errorf("no known_hosts file: %+v", f)
	}

	sshca.AddToFile(kh, cfg.Name, key.Public().(ed25519.PublicKey))
	if f := checkSSHCA(cfg, kh, []string{"/etc/ssh/ssh_known_hosts", kh}); f.level != levelOK {
		t.Errorf("trusted: %+v", f)
	}
	if f := checkSSHCA(cfg, kh, []string{"/etc/ssh/ssh_known_hosts"}); f.level != levelWarn || !strings.Contains(f.fix, "GlobalKnownHostsFile") {
		t.Errorf("a file ssh does not read: %+v", f)
	}

	os.Chmod(filepath.Join(cfg.DataDir, sshca.KeyFile), 0o640)
	if f := checkSSHCA(cfg, kh, nil); f.level != levelFail || !strings.Contains(f.detail, "chmod 600") {
		t.Errorf("a key sluiced refuses: %+v", f)
	}
}

func TestParseGlobalKnownHosts(t *testing.T) {
	out := "user root\nhostname sluice-doctor.invalid\nglobalknownhostsfile /etc/ssh/ssh_known_hosts /etc/ssh//ssh_known_hosts2\nuserknownhostsfile ~/.ssh/known_hosts\n"
	if got := parseGlobalKnownHosts(out); !slices.Equal(got, []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}) {
		t.Errorf("parseGlobalKnownHosts = %q", got)
	}
	if got := parseGlobalKnownHosts("user root\n"); got != nil {
		t.Errorf("without the line: %q, want nil", got)
	}
}

func randHex(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
