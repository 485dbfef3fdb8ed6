package decoder

import (
	"slices"
	"sync"
	"testing"
)

func TestOwed(t *testing.T) {
	tests := []struct {
		name  string
		push  [][]int
		pops  int
		drop  func(int) bool // nil: no Drop
		front int
		ok    bool
		rest  []int
	}{
		{name: "empty", ok: false},
		{name: "fifo", push: [][]int{{1, 2}, {3}}, pops: 1, front: 2, ok: true, rest: []int{2, 3}},
		{name: "all popped", push: [][]int{{1}}, pops: 1, ok: false},
		{name: "drop to marker", push: [][]int{{1, 2, 0, 4}}, drop: func(v int) bool { return v != 0 }, front: 0, ok: true, rest: []int{0, 4}},
		{name: "drop everything", push: [][]int{{1, 2}}, drop: func(int) bool { return true }, ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Owed[int]
			for _, p := range tt.push {
				q.Push(p...)
			}
			q.Front() // a cached head must not survive Pop or Drop
			for range tt.pops {
				q.Pop()
			}
			if tt.drop != nil {
				q.Drop(tt.drop)
			}
			front, ok := q.Front()
			if ok != tt.ok || front != tt.front {
				t.Errorf("Front() = %d, %v; want %d, %v", front, ok, tt.front, tt.ok)
			}
			var rest []int
			q.Scan(func(v int) bool { rest = append(rest, v); return true })
			if !slices.Equal(rest, tt.rest) {
				t.Errorf("Scan = %v; want %v", rest, tt.rest)
			}
		})
	}
}

// TestOwedConcurrent pushes from one goroutine and pops from another, as
// a relay's two sides do; run under -race.
func TestOwedConcurrent(t *testing.T) {
	const n = 10000
	var q Owed[int]
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range n {
			q.Push(i)
		}
	})
	for want := 0; want < n; {
		v, ok := q.Front()
		if !ok {
			continue
		}
		if v != want {
			t.Fatalf("Front() = %d; want %d", v, want)
		}
		q.Pop()
		want++
	}
	wg.Wait()
	if _, ok := q.Front(); ok {
		t.Error("queue not empty after every value was popped")
	}
}
