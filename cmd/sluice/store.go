package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/enforcer/store"
	"github.com/sluicehq/sluice/enforcer/store/s3"
	"github.com/sluicehq/sluice/internal/api"
)

// storeFlags are --store and its companions: read recordings from
// S3-compatible storage instead of a daemon.
type storeFlags struct {
	url, endpoint, caFile, region string
	insecure                      bool
	// pub is --pub (verify only): a pinned recording public key.
	pub string
	// fleetPub is --fleet-pub (verify, sessions list and show): the
	// fleet public key that endorses each VM's recording key.
	fleetPub string
	// keyNote is what storeDetail found of the session's key with
	// --fleet-pub; forged says it is not endorsed.
	keyNote string
	forged  bool
}

// fleetKey reads --fleet-pub; nil without it.
func (s *storeFlags) fleetKey() (ed25519.PublicKey, error) {
	if s.fleetPub == "" {
		return nil, nil
	}
	data, err := os.ReadFile(s.fleetPub)
	if err != nil {
		return nil, fmt.Errorf("read --fleet-pub %s", fileError(s.fleetPub, err))
	}
	fleet, err := record.ParsePublicKey(data)
	if err != nil {
		return nil, usageErrorf("--fleet-pub %s: %v (give the PREFIX.pub of the fleet key pair)", s.fleetPub, err)
	}
	return fleet, nil
}

// fleetNote checks sc's key against the fleet key: a note for listings,
// and whether it is forged.
func fleetNote(ctx context.Context, b *s3.Bucket, sc *s3.Sidecar, fleet ed25519.PublicKey) (string, bool) {
	_, e, err := b.CheckFleet(ctx, sc, fleet)
	switch {
	case errors.Is(err, s3.ErrForged):
		return "FORGED: " + err.Error(), true
	case err != nil:
		return "not checked: " + err.Error(), false
	}
	return fmt.Sprintf("vm %s's key, endorsed by fleet key %.16s (signatures checked by verify)", e.VM, e.FleetKeyID), false
}

// addStoreFlags adds --store, --store-endpoint, --store-region,
// --store-ca and --store-insecure to fs.
func addStoreFlags(fs *pflag.FlagSet) *storeFlags {
	s := &storeFlags{}
	fs.StringVar(&s.url, "store", "", "read from S3-compatible storage at `URL` (s3://BUCKET/PREFIX) instead of the daemon; credentials from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY")
	fs.StringVar(&s.endpoint, "store-endpoint", "", "with --store, the server's `HOST:PORT` (default s3.amazonaws.com)")
	fs.StringVar(&s.region, "store-region", "", "with --store, the bucket's `REGION` (default: ask the server)")
	fs.StringVar(&s.caFile, "store-ca", "", "with --store, trust only the CA certificates in `FILE` (PEM) for the server")
	fs.BoolVar(&s.insecure, "store-insecure", false, "with --store, use plain HTTP (a server on loopback)")
	return s
}

// set reports whether --store was given.
func (s *storeFlags) set() bool { return s != nil && s.url != "" }

// open returns the store the flags name. Its flag errors are usage
// errors.
func (s *storeFlags) open() (*s3.Bucket, error) {
	if _, _, err := s3.ParseURL(s.url); err != nil {
		return nil, usageErrorf("--store: %v", err)
	}
	cfg := s3.Config{URL: s.url, Endpoint: s.endpoint, Region: s.region, Insecure: s.insecure,
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY")}
	if s.caFile != "" {
		if s.insecure {
			return nil, usageErrorf("--store-ca has no use with --store-insecure (plain HTTP): give one of them")
		}
		pem, err := os.ReadFile(s.caFile)
		if err != nil {
			return nil, fmt.Errorf("read --store-ca %s", fileError(s.caFile, err))
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usageErrorf("--store-ca %s: no PEM certificate in it", s.caFile)
		}
	}
	return s3.Open(cfg)
}

// storeList is sessions list --store. It also returns the checkpoint
// times of the active sessions listed (checkpoints under active/) and,
// with --fleet-pub, what the fleet key says of each session's key
// ("vm NAME" or "FORGED").
func storeList(s *storeFlags, f store.Filter) ([]*store.Session, map[string]time.Time, map[string]string, error) {
	fleet, err := s.fleetKey()
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := s.open()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	list, err := b.List(ctx, f)
	if err != nil {
		return nil, nil, nil, err
	}
	out := make([]*store.Session, len(list))
	cps, keys := map[string]time.Time{}, map[string]string{}
	for i, sc := range list {
		out[i] = &sc.Session
		if !sc.Checkpoint.IsZero() {
			cps[sc.Session.ID] = sc.Checkpoint
		}
		if fleet != nil {
			note, forged := fleetNote(ctx, b, sc, fleet)
			switch {
			case forged:
				keys[sc.Session.ID] = "FORGED"
			case strings.HasPrefix(note, "vm "):
				keys[sc.Session.ID] = "vm " + sc.VM
			default:
				keys[sc.Session.ID] = "not checked"
			}
		}
	}
	return out, cps, keys, nil
}

// storeDetail is what detail returns for a session read from the store:
// its recording is read and its checksums and hash chain checked, not its
// signatures (verify --store does that).
func storeDetail(s *storeFlags, id string) (*store.Session, []record.Event, *api.SessionDetail, error) {
	fleet, err := s.fleetKey()
	if err != nil {
		return nil, nil, nil, err
	}
	b, err := s.open()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sc, err := b.Find(ctx, id)
	if errors.Is(err, s3.ErrNotFound) {
		return nil, nil, nil, fmt.Errorf("no session %q in %s", id, b)
	} else if err != nil {
		return nil, nil, nil, err
	}
	if fleet != nil {
		s.keyNote, s.forged = fleetNote(ctx, b, sc, fleet)
	}
	rec, err := b.Read(ctx, sc, nil)
	d := &api.SessionDetail{}
	d.Session, _ = json.Marshal(sc.Session)
	if err != nil {
		d.ReadError = err.Error()
	}
	var events []record.Event
	if rec != nil {
		d.Header, _ = json.Marshal(rec.Header)
		d.Events, _ = json.Marshal(rec.Events)
		d.RecordingStatus = rec.Result.Status.String()
		if !sc.Checkpoint.IsZero() {
			d.RecordingStatus = "unsealed checkpoint of " + sc.Checkpoint.Local().Format(time.RFC3339)
		}
		events = rec.Events
	}
	return &sc.Session, events, d, nil
}

// storeVerify is verify --store: each recording is checked against the
// pinned key (--pub) or, without one, the key its sidecar names.
func storeVerify(stdout io.Writer, s *storeFlags, id string) error {
	b, err := s.open()
	if err != nil {
		return err
	}
	var pinned ed25519.PublicKey
	if s.pub != "" && s.fleetPub != "" {
		return usageErrorf("give --pub (one VM's key) or --fleet-pub (the fleet key), not both")
	}
	fleet, err := s.fleetKey()
	if err != nil {
		return err
	}
	if s.pub != "" {
		data, err := os.ReadFile(s.pub)
		if err != nil {
			return fmt.Errorf("read --pub %s", fileError(s.pub, err))
		}
		if pinned, err = record.ParsePublicKey(data); err != nil {
			return usageErrorf("--pub %s: %v", s.pub, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	var list []*s3.Sidecar
	if id == "" {
		if list, err = b.List(ctx, store.Filter{}); err != nil {
			return err
		}
	} else {
		sc, err := b.Find(ctx, id)
		if errors.Is(err, s3.ErrNotFound) {
			return fmt.Errorf("no session %q in %s", id, b)
		} else if err != nil {
			return err
		}
		list = append(list, sc)
	}
	bad := 0
	for _, sc := range list {
		pub, how := pinned, "pinned key"
		if fleet != nil {
			endorsed, e, err := b.CheckFleet(ctx, sc, fleet)
			if errors.Is(err, s3.ErrForged) {
				bad++
				fmt.Fprintf(stdout, "%s: FORGED: %v\n", sc.Session.ID, err)
				continue
			} else if err != nil {
				bad++
				fmt.Fprintf(stdout, "%s: NOT CHECKED: %v\n", sc.Session.ID, err)
				continue
			}
			pub, how = endorsed, fmt.Sprintf("vm %s's key, endorsed by fleet key %.16s, first seen %s", e.VM, e.FleetKeyID, e.FirstSeen.Format(time.RFC3339))
		}
		if pub == nil {
			how = "the key its sidecar names"
			if pub, err = record.ParsePublicKey([]byte(sc.PublicKey)); err != nil {
				bad++
				fmt.Fprintf(stdout, "%s: ALTERED: the sidecar's public key does not parse: %v\n", sc.Session.ID, err)
				continue
			}
		}
		rec, err := b.Read(ctx, sc, pub)
		if err == nil && sc.Session.Status == store.StatusSealed && rec.Result.Status != record.StatusSealed {
			err = errors.New("the index records this session as sealed, but the recording has no seal: its end was cut off")
		}
		if err != nil {
			bad++
			fmt.Fprintf(stdout, "%s: ALTERED: %v\n", sc.Session.ID, err)
			continue
		}
		r := rec.Result
		note := ""
		if !sc.Checkpoint.IsZero() {
			fmt.Fprintf(stdout, "%s: ok, unsealed checkpoint of an active session taken %s, %d events, signed by key %.16s (%s): frames 0-%d are signed, %d after the last signed checkpoint are chained but unsigned, %d torn bytes at the end; the session had not ended then\n",
				sc.Session.ID, sc.Checkpoint.Format(time.RFC3339), r.Events, record.KeyID(pub), how, r.SignedThrough, r.Frames-1-r.SignedThrough, r.TornBytes)
			continue
		}
		if r.Status == record.StatusInterrupted {
			note = fmt.Sprintf(" (interrupted: frames 0-%d are signed, %d after the last checkpoint are chained but unsigned, %d torn bytes at the end)",
				r.SignedThrough, r.Frames-1-r.SignedThrough, r.TornBytes)
		}
		fmt.Fprintf(stdout, "%s: ok, %s, %d events, signed by key %.16s (%s)%s\n", sc.Session.ID, r.Status, r.Events, record.KeyID(pub), how, note)
	}
	if pinned == nil && fleet == nil && len(list) > 0 {
		fmt.Fprintln(stdout, "note: without --pub each recording is checked against the key its own sidecar names, which proves it unaltered since it was signed, not which VM signed it; pin a VM's key (sluice recordings pubkey) with --pub FILE")
	}
	if bad > 0 {
		fmt.Fprintf(stdout, "%d of %d recordings failed verification\n", bad, len(list))
		return exitStatus(1)
	}
	return nil
}

// check refuses --store together with --server, and the --store-* flags
// without --store.
func (s *storeFlags) check(d *daemonFlags) error {
	switch {
	case s.set() && d.server != "":
		return usageErrorf("give --store or --server, not both")
	case !s.set() && (s.endpoint != "" || s.caFile != "" || s.region != "" || s.insecure || s.pub != "" || s.fleetPub != ""):
		return usageErrorf("--store-endpoint, --store-region, --store-ca, --store-insecure, --pub and --fleet-pub need --store s3://BUCKET/PREFIX")
	}
	return nil
}

// detail is detail from the store with --store, from the daemon without.
func (s *storeFlags) detail(d *daemonFlags, id string) (*store.Session, []record.Event, *api.SessionDetail, error) {
	if s.set() {
		return storeDetail(s, id)
	}
	return detail(d, id)
}
