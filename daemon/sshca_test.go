package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/internal/sshca"
)

// TestLoadSSHHostCA: the daemon creates the SSH host CA in data_dir on its
// first start and logs its public key, loads the same key afterwards, and
// stops on a key file other users can read with a data_dir error that says
// how to fix the file.
func TestLoadSSHHostCA(t *testing.T) {
	cfg := &Config{Path: "/etc/sluice/sluiced.hcl", DataDir: filepath.Join(t.TempDir(), "data")}
	var logs bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
	key, err := loadSSHHostCA(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "created the SSH host CA") || !strings.Contains(logs.String(), "sluice-ssh-host-ca") {
		t.Errorf("first start logs:\n%s\nwant the created CA's public key", logs.String())
	}
	logs.Reset()
	again, err := loadSSHHostCA(cfg, log)
	if err != nil || !again.Equal(key) || strings.Contains(logs.String(), "created") {
		t.Errorf("second start: same key %v, %v, logs:\n%s", again.Equal(key), err, logs.String())
	}

	path := filepath.Join(cfg.DataDir, sshca.KeyFile)
	os.Chmod(path, 0o644)
	_, err = loadSSHHostCA(cfg, log)
	if err == nil {
		t.Fatal("a key file others can read was accepted")
	}
	msg := dataDirError(cfg, err).Error()
	for _, want := range []string{"data_dir " + cfg.DataDir, "chmod 600 " + path} {
		if !strings.Contains(msg, want) {
			t.Errorf("start error %q lacks %q", msg, want)
		}
	}
	if ExitCode(dataDirError(cfg, err)) == ExitOK {
		t.Error("the daemon would start")
	}
}
