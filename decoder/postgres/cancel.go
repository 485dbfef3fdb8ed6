package postgres

import (
	"context"
	"net"
	"sync"
	"time"
)

// Cancels maps the cancel keys (BackendKeyData) of live sessions to the
// upstream that issued them and the server's own CancelRequest, so a
// CancelRequest, which arrives on a new connection, reaches the backend
// it names and no other. Keys are relayed to clients unchanged, except on
// pooled targets, whose clients get keys of Sluice's own (pool.go). It is
// safe for concurrent use.
type Cancels struct {
	mu   sync.Mutex
	keys map[string]cancelTo
}

// cancelTo is where a key's CancelRequest goes: the server's own packet,
// sent on a new connection from dial.
type cancelTo struct {
	dial   func(context.Context) (net.Conn, error)
	packet []byte
}

// NewCancels returns an empty registry.
func NewCancels() *Cancels {
	return &Cancels{keys: map[string]cancelTo{}}
}

func cancelKey(pid uint32, secret []byte) string {
	return string([]byte{byte(pid >> 24), byte(pid >> 16), byte(pid >> 8), byte(pid)}) + string(secret)
}

func (c *Cancels) add(key string, dial func(context.Context) (net.Conn, error), packet []byte) {
	c.mu.Lock()
	c.keys[key] = cancelTo{dial, packet}
	c.mu.Unlock()
}

func (c *Cancels) remove(key string) {
	c.mu.Lock()
	delete(c.keys, key)
	c.mu.Unlock()
}

// forward sends the server's CancelRequest for the session that gave out
// key to its upstream. It reports whether the key was known. As
// PostgreSQL does, nothing is answered to the requester.
func (c *Cancels) forward(ctx context.Context, key string) bool {
	c.mu.Lock()
	to, ok := c.keys[key]
	c.mu.Unlock()
	if !ok {
		return false
	}
	dial, packet := to.dial, to.packet
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	up, err := dial(ctx)
	if err != nil {
		return true
	}
	defer up.Close()
	up.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := up.Write(packet); err == nil {
		// Wait for the server to close, as libpq does, so the cancel has
		// been processed when the requester's connection ends.
		var b [1]byte
		up.Read(b[:])
	}
	return true
}
