package postgres

import (
	"context"
	"net"
	"sync"
	"time"
)

// Cancels maps the cancel keys (BackendKeyData) of live sessions to the
// upstream that issued them, so a CancelRequest, which arrives on a new
// connection, reaches the backend it names and no other. Keys are relayed
// to clients unchanged. It is safe for concurrent use.
type Cancels struct {
	mu   sync.Mutex
	keys map[string]func(context.Context) (net.Conn, error)
}

// NewCancels returns an empty registry.
func NewCancels() *Cancels {
	return &Cancels{keys: map[string]func(context.Context) (net.Conn, error){}}
}

func cancelKey(pid uint32, secret []byte) string {
	return string([]byte{byte(pid >> 24), byte(pid >> 16), byte(pid >> 8), byte(pid)}) + string(secret)
}

func (c *Cancels) add(key string, dial func(context.Context) (net.Conn, error)) {
	c.mu.Lock()
	c.keys[key] = dial
	c.mu.Unlock()
}

func (c *Cancels) remove(key string) {
	c.mu.Lock()
	delete(c.keys, key)
	c.mu.Unlock()
}

// forward sends a raw CancelRequest packet (length included) to the
// upstream whose session issued the key. It reports whether the key was
// known. As PostgreSQL does, nothing is answered to the requester.
func (c *Cancels) forward(ctx context.Context, key string, packet []byte) bool {
	c.mu.Lock()
	dial, ok := c.keys[key]
	c.mu.Unlock()
	if !ok {
		return false
	}
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
