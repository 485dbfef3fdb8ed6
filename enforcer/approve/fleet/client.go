package fleet

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/nacl/box"
)

// Client is an approver's view of the bucket: list holds, send decisions.
// Close it when done.
type Client struct {
	nc *nats.Conn
	kv jetstream.KeyValue
}

// Dial connects to NATS and opens the bucket (it does not create it).
func Dial(ctx context.Context, c Conn) (*Client, error) {
	opts, err := c.options("sluice approvals")
	if err != nil {
		return nil, err
	}
	opts = append(opts, nats.Timeout(5*time.Second))
	nc, err := nats.Connect(c.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", c.URL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	kv, err := js.KeyValue(ctx, c.bucket())
	if err != nil {
		nc.Close()
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("no bucket %s on %s: no daemon with approvals nats_url has started there yet (or give --bucket)", c.bucket(), c.URL)
		}
		return nil, fmt.Errorf("open bucket %s: %w", c.bucket(), err)
	}
	return &Client{nc: nc, kv: kv}, nil
}

// Close closes the connection.
func (c *Client) Close() { c.nc.Close() }

// List returns the holds in the bucket, pending first, then by deadline.
func (c *Client) List(ctx context.Context) ([]Hold, error) {
	keys, err := c.kv.ListKeysFiltered(ctx, "hold.>")
	if err != nil {
		return nil, fmt.Errorf("list holds: %w", err)
	}
	defer keys.Stop()
	var out []Hold
	for k := range keys.Keys() {
		e, err := c.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", k, err)
		}
		var h Hold
		if err := json.Unmarshal(e.Value(), &h); err != nil {
			continue
		}
		out = append(out, h)
	}
	sort.SliceStable(out, func(i, j int) bool {
		pi, pj := out[i].Request.State == "pending", out[j].Request.State == "pending"
		if pi != pj {
			return pi
		}
		return out[i].Request.Deadline.Before(out[j].Request.Deadline)
	})
	return out, nil
}

// ErrNoAnswer is returned by Decide when the holding VM did not answer in
// time.
var ErrNoAnswer = errors.New("the holding VM did not answer")

// Decide seals a decision on hold id with the approver's ID token to the
// hold's box key, puts it in the bucket and waits, until ctx ends, for the
// holding VM's result. put, when set, is called right after the put.
func (c *Client) Decide(ctx context.Context, id string, approveIt bool, comment, token string, put func()) (Result, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	if strings.ContainsAny(id, ".*> ") || id == "" {
		return Result{}, fmt.Errorf("hold ID %q: give an ID such as h-abcd2345", id)
	}
	e, err := c.kv.Get(ctx, "hold."+id)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return Result{}, fmt.Errorf("no hold %s in the bucket", id)
	}
	if err != nil {
		return Result{}, fmt.Errorf("read hold %s: %w", id, err)
	}
	var h Hold
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return Result{}, fmt.Errorf("hold %s: %w", id, err)
	}
	return c.Send(ctx, h, Decision{Hold: id, VM: h.VM, Approve: approveIt, Comment: comment, Token: token, At: time.Now().UTC()}, put)
}

// Send seals d to h's box key as decision.<h's ID>.<nonce> and waits for
// the result. Decide is the usual way; Send lets tests send what they
// like.
func (c *Client) Send(ctx context.Context, h Hold, d Decision, put func()) (Result, error) {
	key, err := base64.StdEncoding.DecodeString(h.BoxKey)
	if err != nil || len(key) != 32 {
		return Result{}, fmt.Errorf("hold %s has no valid box_key", h.Request.ID)
	}
	plain, _ := json.Marshal(d)
	sealed, err := box.SealAnonymous(nil, plain, (*[32]byte)(key), rand.Reader)
	if err != nil {
		return Result{}, err
	}
	return c.SendRaw(ctx, h.Request.ID, sealed, put)
}

// SendRaw puts sealed as a decision on hold id and waits for the result.
func (c *Client) SendRaw(ctx context.Context, id string, sealed []byte, put func()) (Result, error) {
	var n [8]byte
	rand.Read(n[:])
	nonce := hex.EncodeToString(n[:])
	w, err := c.kv.Watch(ctx, "result."+id+"."+nonce, jetstream.IgnoreDeletes())
	if err != nil {
		return Result{}, fmt.Errorf("watch result: %w", err)
	}
	defer w.Stop()
	if _, err := c.kv.Put(ctx, "decision."+id+"."+nonce, sealed); err != nil {
		return Result{}, fmt.Errorf("put decision: %w", err)
	}
	if put != nil {
		put()
	}
	for {
		select {
		case <-ctx.Done():
			return Result{}, ErrNoAnswer
		case e, ok := <-w.Updates():
			if !ok {
				return Result{}, ErrNoAnswer
			}
			if e == nil {
				continue
			}
			var r Result
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return Result{}, fmt.Errorf("result for %s: %w", id, err)
			}
			return r, nil
		}
	}
}
