package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"

	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/enforcer/store/s3"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/ruleset"
)

// storeBlock is the store block as written: where sealed recordings are
// uploaded.
type storeBlock struct {
	URL          string `hcl:"url"`
	Endpoint     string `hcl:"endpoint,optional"`
	Region       string `hcl:"region,optional"`
	AccessKeyEnv string `hcl:"access_key_env,optional"`
	SecretKeyEnv string `hcl:"secret_key_env,optional"`
	Insecure     bool   `hcl:"insecure,optional"`
	CAFile       string `hcl:"ca_file,optional"`
	Retention    string `hcl:"retention,optional"`
	VM           string `hcl:"vm,optional"`
	FleetKeyFile string `hcl:"fleet_key_file,optional"`
	Checkpoint   string `hcl:"checkpoint,optional"`
}

// StoreSettings is the validated store block. Credentials are not kept
// here: they are read from the environment variables it names when the
// daemon starts.
type StoreSettings struct {
	// URL is s3://BUCKET/PREFIX.
	URL      string
	Endpoint string
	Region   string
	// AccessKeyEnv and SecretKeyEnv name the environment variables of
	// sluiced that hold the credentials (default AWS_ACCESS_KEY_ID and
	// AWS_SECRET_ACCESS_KEY).
	AccessKeyEnv, SecretKeyEnv string
	// Insecure uses plain HTTP.
	Insecure bool
	// CAFile, when set, holds the only CAs trusted for the server.
	CAFile string
	// Retention is the object-lock retention of each upload where the
	// bucket has object lock (default 0: none).
	Retention time.Duration
	// VM is this VM's name in sidecars and key endorsements (default:
	// the host name).
	VM string
	// FleetKeyFile, when set, is the fleet's private signing key (sluice
	// rules keygen's PREFIX.key): read once at start to publish this
	// VM's recording key, endorsed, to keys/VM/ in the store.
	FleetKeyFile string
	// Checkpoint is how often the recordings of active sessions are
	// uploaded as checkpoints to active/ (default 60 s; 0: never).
	Checkpoint time.Duration
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// setStore validates the store block.
func (c *Config) setStore(sb *storeBlock) hcl.Diagnostics {
	if sb == nil {
		return nil
	}
	var diags hcl.Diagnostics
	bad := func(summary, detail string) {
		diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail})
	}
	if _, _, err := s3.ParseURL(sb.URL); err != nil {
		bad("Invalid store url", fmt.Sprintf("%v. Give the bucket and an optional prefix, such as url = \"s3://recordings/fleet\".", err))
	}
	st := &StoreSettings{URL: sb.URL, Endpoint: sb.Endpoint, Region: sb.Region, Insecure: sb.Insecure, CAFile: sb.CAFile,
		AccessKeyEnv: "AWS_ACCESS_KEY_ID", SecretKeyEnv: "AWS_SECRET_ACCESS_KEY"}
	for _, e := range []struct {
		name, val string
		dst       *string
	}{{"access_key_env", sb.AccessKeyEnv, &st.AccessKeyEnv}, {"secret_key_env", sb.SecretKeyEnv, &st.SecretKeyEnv}} {
		if e.val == "" {
			continue
		}
		if !envName.MatchString(e.val) {
			bad("Invalid store "+e.name, fmt.Sprintf("%s = %q: give the name of an environment variable of sluiced (such as SLUICE_S3_KEY), not the credential itself.", e.name, e.val))
		}
		*e.dst = e.val
	}
	if sb.Retention != "" {
		d, err := parseDays(sb.Retention)
		if err != nil || d < 0 {
			bad("Invalid store retention", fmt.Sprintf("retention %q: give a duration such as \"30d\" or \"720h\", or leave it out for no object lock retention.", sb.Retention))
		}
		st.Retention = d
	}
	st.VM, st.FleetKeyFile, st.Checkpoint = sb.VM, sb.FleetKeyFile, defaultCheckpoint
	if sb.Checkpoint == "0" {
		st.Checkpoint = 0
	} else if sb.Checkpoint != "" {
		d, err := time.ParseDuration(sb.Checkpoint)
		if err != nil || d != 0 && d < time.Second {
			bad("Invalid store checkpoint", fmt.Sprintf("checkpoint %q: give how often active sessions are checkpointed to the store, at least \"1s\" (such as \"60s\"), or \"0\" for never.", sb.Checkpoint))
		}
		st.Checkpoint = d
	}
	if st.VM == "" {
		h, _ := os.Hostname()
		st.VM = vmName(h)
	} else if vmName(st.VM) != st.VM {
		bad("Invalid store vm", fmt.Sprintf("vm %q: use letters, digits, '-', '_' and '.' only (it names a folder in the store), or leave it out for the host name.", st.VM))
	}
	if sb.Insecure && sb.CAFile != "" {
		bad("Conflicting store settings", "insecure = true uses plain HTTP, where ca_file has no use: remove one of them.")
	}
	c.Store = st
	return diags
}

// vmName makes a host name usable as a store vm: characters other than
// letters, digits, '-', '_' and '.' become '_'.
func vmName(h string) string {
	b := []byte(h)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	s := strings.ReplaceAll(string(b), "..", "__")
	if s == "" || len(s) > 128 {
		return "vm"
	}
	return s
}

// openStore opens the configured store with the credentials from the
// environment, logging (never the values) what is missing.
func openStore(st *StoreSettings, log hclog.Logger) (*s3.Bucket, error) {
	cfg := s3.Config{URL: st.URL, Endpoint: st.Endpoint, Region: st.Region, Insecure: st.Insecure, Retention: st.Retention,
		AccessKey: os.Getenv(st.AccessKeyEnv), SecretKey: os.Getenv(st.SecretKeyEnv), VM: st.VM}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		log.Error("store credentials are not set: uploads go unsigned and will likely be refused", "access_key_env", st.AccessKeyEnv, "secret_key_env", st.SecretKeyEnv)
	}
	if st.CAFile != "" {
		pem, err := os.ReadFile(st.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read store ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read store ca_file %s: no PEM certificate in it", st.CAFile)
		}
	}
	return s3.Open(cfg)
}

// uploads is the daemon's uploader of sealed recordings.
type uploads struct {
	b      *s3.Bucket
	u      *s3.Uploader
	log    hclog.Logger
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// startUploads starts uploading rec's sealed recordings to the configured
// store; with no store block it does nothing and returns nil. The uploads
// run until stop, not until the daemon's context ends, so that sessions
// sealed while the daemon drains its flows are uploaded too.
func startUploads(cfg *Config, rec *recorder, log hclog.Logger) (*uploads, error) {
	if cfg.Store == nil {
		return nil, nil
	}
	b, err := openStore(cfg.Store, log)
	if err != nil {
		return nil, err
	}
	var endorsement *s3.KeyEndorsement
	var fleetPub ed25519.PublicKey
	if cfg.Store.FleetKeyFile != "" {
		fleet, err := readFleetKey(cfg.Store.FleetKeyFile, log)
		if err != nil {
			return nil, err
		}
		fleetPub = fleet.Public().(ed25519.PublicKey)
		if endorsement, err = s3.Endorse(fleet, cfg.Store.VM, rec.keys.PublicKey(), time.Now()); err != nil {
			return nil, err
		}
		clear(fleet) // only the endorsement is kept
	}
	ctx, cancel := context.WithCancel(context.Background())
	up := &uploads{b: b, u: s3.NewUploader(b, rec.keys.PublicKey(), log), log: log, cancel: cancel, done: make(chan struct{})}
	up.u.Dir = filepath.Join(cfg.DataDir, uploadQueueDir)
	n, err := up.u.Resume()
	if err != nil {
		cancel()
		return nil, err
	}
	if n > 0 {
		log.Info("uploads pending when sluiced last stopped are queued again", "pending", n, "queue", up.u.Dir)
	}
	rec.upload = func(s *store.Session) { up.u.Enqueue(s) }
	up.u.Checkpoint, up.u.Active = cfg.Store.Checkpoint, rec.openSessions
	go func() {
		defer close(up.done)
		if endorsement != nil {
			up.publishKey(ctx, endorsement, fleetPub)
		}
		up.u.Run(ctx)
	}()
	log.Info("uploading sealed recordings", "store", b.String(), "endpoint", cfg.Store.Endpoint, "checkpoint", cfg.Store.Checkpoint, "vm", cfg.Store.VM)
	return up, nil
}

// readFleetKey reads the fleet private key file, warning when others
// than root may read it.
func readFleetKey(path string, log hclog.Logger) (ed25519.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read store fleet_key_file: %w (sluiced reads it once at start: deliver it before sluiced starts)", err)
	}
	defer clear(data)
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the fleet signing key file may be read by others than its owner: make it mode 0600, owned by root", "file", path, "mode", fi.Mode().Perm().String())
	}
	priv, err := ruleset.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("store fleet_key_file %s: %w (give the PREFIX.key of sluice rules keygen)", path, err)
	}
	return priv, nil
}

// publishKey publishes this VM's endorsed recording key before any
// upload, retrying with the uploader's backoff while the store is down
// (recordings wait: a reader with the fleet key would call them forged
// until the key is there).
func (up *uploads) publishKey(ctx context.Context, e *s3.KeyEndorsement, fleet ed25519.PublicKey) {
	back := s3.DefaultMinBackoff
	for {
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		wrote, err := up.b.PublishKey(tctx, e, fleet)
		cancel()
		if err == nil {
			up.log.Info("recording key published to the store, endorsed by the fleet key", "vm", e.VM, "key", e.KeyID[:16], "fleet_key", e.FleetKeyID[:16], "new", wrote)
			return
		}
		if ctx.Err() != nil {
			return
		}
		up.log.Warn("publishing the recording key failed; will retry", "vm", e.VM, "retry_in", back, "error", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(back):
		}
		back = min(2*back, s3.DefaultMaxBackoff)
	}
}

// status reports the uploads for sluice status; nil without a store.
func (up *uploads) status() *api.Uploads {
	if up == nil {
		return nil
	}
	st := up.u.Stats()
	return &api.Uploads{Store: up.b.String(), Pending: st.Pending, Uploaded: st.Uploaded, FailedTries: st.FailedTries, Resumed: st.Resumed}
}

// stop tries every pending upload once more, without backoff, for up to
// within, then stops the uploader and logs what was not uploaded. Call it
// after the flows have drained. Calls after the first do nothing.
func (up *uploads) stop(within time.Duration) {
	if up == nil {
		return
	}
	up.once.Do(func() { up.stop1(within) })
}

func (up *uploads) stop1(within time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	left := up.u.Flush(ctx)
	cancel()
	up.cancel()
	<-up.done
	if left > 0 {
		up.log.Error("recordings not uploaded before exit; their local copies and queue files stay in data_dir and the next start uploads them", "pending", left, "store", up.b.String(), "waited", within, "queue", up.u.Dir)
	}
}

// defaultCheckpoint is how often active sessions are checkpointed to the
// store when the store block does not say.
const defaultCheckpoint = time.Minute

// uploadQueueDir, under data_dir, is the persistent upload queue: one
// file per sealed recording the store has not acknowledged yet.
const uploadQueueDir = "uploads"

// uploadOnStop bounds how long a stopping daemon waits for pending
// uploads, after its flows drained.
const uploadOnStop = 5 * time.Second
