package testenv

import (
	"bytes"
	"io"
	"sync"
)

// Buffer collects what goroutines (a command's output, a handler's log
// lines) write while the test reads it.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Drain copies r into the buffer until r ends, then closes r, without
// holding the lock while it waits for r.
func (b *Buffer) Drain(r io.ReadCloser) {
	defer r.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return
		}
	}
}
