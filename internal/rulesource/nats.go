package rulesource

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsSource reads a bundle from a JetStream object store and watches the
// store, so a new version arrives at once; polls (Fetch) are the fallback
// and compare the object's digest before downloading it.
type natsSource struct {
	raw, server  string
	bucket, name string
	o            Options
	changed      chan struct{}
	ctx          context.Context
	cancel       context.CancelFunc

	mu       sync.Mutex
	nc       *nats.Conn
	obs      jetstream.ObjectStore
	digest   string
	watching bool
}

func newNATS(raw string, p *parsed, o Options) *natsSource {
	ctx, cancel := context.WithCancel(context.Background())
	return &natsSource{raw: raw, server: p.scheme + "://" + p.host, bucket: p.bucket, name: p.name, o: o,
		changed: make(chan struct{}, 1), ctx: ctx, cancel: cancel}
}

func natsConnect(server string, o Options) (*nats.Conn, error) {
	name := o.Name
	if name == "" {
		name = "sluice rules"
	}
	opts := []nats.Option{nats.Name(name), nats.Timeout(5 * time.Second), nats.MaxReconnects(-1), nats.ReconnectWait(500 * time.Millisecond)}
	if o.Creds != "" {
		opts = append(opts, nats.UserCredentials(o.Creds))
	}
	if o.CAFile != "" {
		opts = append(opts, nats.RootCAs(o.CAFile))
	}
	return nats.Connect(server, opts...)
}

// store connects (once; nats.go reconnects by itself afterwards) and
// opens the object store. The caller holds s.mu.
func (s *natsSource) store(ctx context.Context) (jetstream.ObjectStore, error) {
	if s.obs != nil {
		return s.obs, nil
	}
	if s.nc == nil {
		nc, err := natsConnect(s.server, s.o)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", s.server, err)
		}
		s.nc = nc
	}
	js, err := jetstream.New(s.nc)
	if err != nil {
		return nil, err
	}
	obs, err := js.ObjectStore(ctx, s.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, fmt.Errorf("object store %q: %w (publish one with sluice rules publish)", s.bucket, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("object store %q: %w", s.bucket, err)
	}
	s.obs = obs
	return obs, nil
}

func (s *natsSource) Fetch(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	obs, err := s.store(ctx)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, err)
	}
	if !s.watching {
		s.watch(obs)
	}
	info, err := obs.GetInfo(ctx, s.name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, err)
	}
	if info.Digest != "" && info.Digest == s.digest {
		return nil, nil
	}
	if info.Size > MaxBundle {
		return nil, fmt.Errorf("fetch bundle %s: %d bytes, more than %d", s.raw, info.Size, MaxBundle)
	}
	data, err := obs.GetBytes(ctx, s.name)
	if err != nil {
		return nil, fmt.Errorf("fetch bundle %s: %w", s.raw, err)
	}
	s.digest = info.Digest
	return data, nil
}

// watch signals Changed for every update of the bundle's object until the
// source closes or the watch breaks (the next Fetch starts another). The
// caller holds s.mu.
func (s *natsSource) watch(obs jetstream.ObjectStore) {
	w, err := obs.Watch(s.ctx, jetstream.UpdatesOnly())
	if err != nil {
		return
	}
	s.watching = true
	go func() {
		defer func() {
			w.Stop()
			s.mu.Lock()
			s.watching = false
			s.mu.Unlock()
		}()
		for {
			select {
			case <-s.ctx.Done():
				return
			case info, ok := <-w.Updates():
				if !ok {
					return
				}
				if info == nil || info.Name != s.name {
					continue
				}
				select {
				case s.changed <- struct{}{}:
				default:
				}
			}
		}
	}()
}

// Watching reports whether the source's watch is running.
func (s *natsSource) Watching() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.watching
}

func (s *natsSource) Changed() <-chan struct{} { return s.changed }
func (s *natsSource) String() string           { return s.raw }
func (s *natsSource) Close() error {
	s.cancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}

func publishNATS(ctx context.Context, raw string, p *parsed, o Options, data []byte) error {
	nc, err := natsConnect(p.scheme+"://"+p.host, o)
	if err != nil {
		return fmt.Errorf("publish bundle: connect to %s: %w", p.host, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	obs, err := js.ObjectStore(ctx, p.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: p.bucket,
			Description: "signed Sluice ruleset bundles (sluice rules publish)", Storage: jetstream.FileStorage})
	}
	if err != nil {
		return fmt.Errorf("publish bundle: object store %q: %w", p.bucket, err)
	}
	if _, err := obs.PutBytes(ctx, p.name, data); err != nil {
		return fmt.Errorf("publish bundle to %s: %w", raw, err)
	}
	return nil
}
