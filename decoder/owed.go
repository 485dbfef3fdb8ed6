package decoder

import "sync"

// Owed is the queue of answers a server owes a session, in the order the
// client side sent what asks for them: the client side pushes at the
// back as it forwards a message, the server side looks at and pops the
// front as the answers arrive. What a value is and when an answer ends
// one is the protocol's (PostgreSQL: one op per Parse, Bind, Execute,
// Sync, Query...).
//
// Owed is safe for one producer goroutine (Push) and one consumer
// goroutine (Front, Pop, Drop, Scan); Front caches the head, so it
// takes the lock only while the consumer has none. Popped slots are
// zeroed so the queue holds no reference to them, and pushes go on
// appending to the same backing array until it is full, as a slice
// used as a queue does. The zero value is an empty queue.
type Owed[T any] struct {
	mu   sync.Mutex
	vals []T
	// cur and has are the consumer's: the head, once read (only the
	// consumer removes values, so it stays the head until it does).
	cur T
	has bool
}

// Push appends vs at the back. Producer only.
func (q *Owed[T]) Push(vs ...T) {
	q.mu.Lock()
	q.vals = append(q.vals, vs...)
	q.mu.Unlock()
}

// Len is how many values are owed.
func (q *Owed[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.vals)
}

// Front returns the value at the front and true, or the zero value and
// false when nothing is owed. Consumer only.
func (q *Owed[T]) Front() (T, bool) {
	if q.has {
		return q.cur, true
	}
	q.mu.Lock()
	if len(q.vals) > 0 {
		q.cur, q.has = q.vals[0], true
	}
	q.mu.Unlock()
	return q.cur, q.has
}

// Pop removes the value at the front; the queue must not be empty.
// Consumer only.
func (q *Owed[T]) Pop() {
	var zero T
	q.mu.Lock()
	q.vals[0] = zero
	q.vals = q.vals[1:]
	q.cur, q.has = zero, false
	q.mu.Unlock()
}

// Drop removes values from the front for as long as drop reports true
// for them, stopping at the first it refuses or when the queue is empty.
// drop is called with the queue locked: it must not call the queue's
// methods. Consumer only.
func (q *Owed[T]) Drop(drop func(v T) bool) {
	var zero T
	q.mu.Lock()
	q.cur, q.has = zero, false
	for len(q.vals) > 0 && drop(q.vals[0]) {
		q.vals[0] = zero
		q.vals = q.vals[1:]
	}
	q.mu.Unlock()
}

// Scan calls f with each value from the front until f returns false or
// the values run out. f is called with the queue locked: it must not
// call the queue's methods. Consumer only.
func (q *Owed[T]) Scan(f func(v T) bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, v := range q.vals {
		if !f(v) {
			return
		}
	}
}
