package main

// A minimal io_uring, written out by hand against golang.org/x/sys/unix:
// the module proxy here serves none of the Go bindings (giouring,
// iouring-go and go-uring all answer 403), and x/sys/unix has the system
// call numbers but none of the structures. Values and layouts are those of
// include/uapi/linux/io_uring.h; the structures are the same on every
// 64-bit little-endian architecture, which is all this relay builds for.

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	offSQRing = 0
	offSQEs   = 0x10000000

	setupCQSize       = 1 << 3
	setupSubmitAll    = 1 << 7
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13

	featSingleMmap = 1 << 0

	enterGetEvents = 1 << 0

	registerPbufRing = 22

	opAccept = 13
	opSend   = 26
	opRecv   = 27

	sqeBufferSelect = 1 << 5

	acceptMultishot = 1 << 0 // in an accept's ioprio
	recvMultishot   = 1 << 1 // in a recv's ioprio

	cqeFBuffer     = 1 << 0
	cqeFMore       = 1 << 1
	cqeBufferShift = 16
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type uringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe (64 bytes), with the unions named for the
// fields this relay uses.
type sqe struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	opFlags  uint32 // msg_flags, accept_flags
	userData uint64
	bufGroup uint16
	_        uint16 // personality
	_        int32  // splice_fd_in, file_index
	_        [2]uint64
}

// The layouts above, checked: a size that differs fails the build.
var (
	_ [64]byte  = [unsafe.Sizeof(sqe{})]byte{}
	_ [16]byte  = [unsafe.Sizeof(cqe{})]byte{}
	_ [120]byte = [unsafe.Sizeof(uringParams{})]byte{}
	_ [16]byte  = [unsafe.Sizeof(ioBuf{})]byte{}
)

// cqe is struct io_uring_cqe (16 bytes; the ring is not set up with CQE32).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// ring is an io_uring instance for one thread: it must be created, fed and
// reaped by the same locked OS thread (IORING_SETUP_SINGLE_ISSUER), and
// with IORING_SETUP_DEFER_TASKRUN the kernel posts completions only while
// that thread is inside io_uring_enter waiting for events, so the thread
// is woken once per batch rather than once per completion.
type ring struct {
	fd     int
	rings  []byte // the SQ and CQ rings, one mapping (IORING_FEAT_SINGLE_MMAP)
	sqeMem []byte

	sqHead, sqTail *uint32
	sqMask         uint32
	sqes           []sqe
	tail           uint32 // our SQ tail, published to the kernel in submit

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []cqe
	batch          []cqe // completions handed out by reap
}

// newRing sets up an io_uring with sqEntries submission slots and eight
// times as many completion slots, and maps its rings. Close releases it.
func newRing(sqEntries uint32) (*ring, error) {
	p := uringParams{flags: setupCQSize | setupSubmitAll | setupSingleIssuer | setupDeferTaskrun, cqEntries: 8 * sqEntries}
	fd, _, e := unix.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(sqEntries), uintptr(unsafe.Pointer(&p)), 0)
	if e == unix.EINVAL { // before 6.1: no DEFER_TASKRUN; completions then wake the thread as they come
		p = uringParams{flags: setupCQSize | setupSubmitAll, cqEntries: 8 * sqEntries}
		fd, _, e = unix.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(sqEntries), uintptr(unsafe.Pointer(&p)), 0)
	}
	if e != 0 {
		return nil, fmt.Errorf("set up io_uring: %w", e)
	}
	r := &ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 {
		r.Close()
		return nil, errors.New("set up io_uring: the kernel lacks IORING_FEAT_SINGLE_MMAP (5.4)")
	}
	size := max(p.sqOff.array+4*p.sqEntries, p.cqOff.cqes+uint32(unsafe.Sizeof(cqe{}))*p.cqEntries)
	var err error
	if r.rings, err = unix.Mmap(r.fd, offSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("map io_uring rings: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("map io_uring submission entries: %w", err)
	}
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.rings[off])) }
	r.sqHead, r.sqTail, r.sqMask = u32(p.sqOff.head), u32(p.sqOff.tail), *u32(p.sqOff.ringMask)
	r.cqHead, r.cqTail, r.cqMask = u32(p.cqOff.head), u32(p.cqOff.tail), *u32(p.cqOff.ringMask)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&r.rings[p.cqOff.cqes])), p.cqEntries)
	// Slot i of the SQ always names entry i, so the index array is filled
	// once and the tail alone says what is new.
	array := unsafe.Slice(u32(p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.tail = atomic.LoadUint32(r.sqTail)
	return r, nil
}

// Close unmaps the rings and closes the ring's descriptor. The kernel then
// cancels the requests still in flight, drops the file references they
// hold, and frees the ring once they are gone; completions not yet reaped
// are lost.
func (r *ring) Close() error {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.rings != nil {
		unix.Munmap(r.rings)
	}
	return unix.Close(r.fd)
}

// next returns a zeroed submission entry to fill in. It is submitted by the
// next call to submit; when the queue is full, next submits what is queued
// first, without waiting.
func (r *ring) next() (*sqe, error) {
	if r.tail-atomic.LoadUint32(r.sqHead) == uint32(len(r.sqes)) {
		if err := r.submit(0); err != nil {
			return nil, err
		}
	}
	s := &r.sqes[r.tail&r.sqMask]
	*s = sqe{}
	r.tail++
	return s, nil
}

// submit hands the kernel every queued entry and, with wait > 0, waits in
// the same io_uring_enter until at least wait completions are ready.
//
// io_uring_enter is made as a raw system call, even when it waits: the
// loop's goroutine never passes through Go's scheduler, so after 10 ms
// sysmon wants it preempted, and while it sits in an ordinary (entersyscall)
// system call it cannot be, so sysmon takes its P instead, at every tick,
// waking another thread that finds nothing to do (pingpong at one
// connection: 2.9 context switches and 5.1 system calls per round trip,
// against 2.1 and 4.1 raw). Raw, the P stays with the loop, which has no
// other goroutine to give it to; the runtime's preemption signal (SIGURG)
// ends a wait with EINTR, and the goroutine is then preempted as usual,
// so a stop-the-world still gets it within a signal's latency.
func (r *ring) submit(wait uint32) error {
	atomic.StoreUint32(r.sqTail, r.tail)
	var flags uintptr
	if wait > 0 {
		flags = enterGetEvents
	}
	for {
		// The kernel's SQ head says how much it has taken, whatever
		// io_uring_enter returned before an interruption.
		n := r.tail - atomic.LoadUint32(r.sqHead)
		if n == 0 && wait == 0 {
			return nil
		}
		_, _, e := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), flags, 0, 0)
		switch e {
		case 0:
			return nil
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EBUSY:
			// Completions are backed up in the kernel; reaping them
			// makes room.
			return nil
		default:
			return fmt.Errorf("enter io_uring: %w", e)
		}
	}
}

// reap returns the completions that are ready and hands their slots back
// to the kernel. The slice is valid until the next call to reap.
func (r *ring) reap() []cqe {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	r.batch = r.batch[:0]
	for ; head != tail; head++ {
		r.batch = append(r.batch, r.cqes[head&r.cqMask])
	}
	atomic.StoreUint32(r.cqHead, head)
	return r.batch
}

// bufRing is a ring of provided buffers (IORING_REGISTER_PBUF_RING), one
// buffer group, from which the kernel picks a buffer for each receive
// completion. A buffer the kernel picked is ours until put hands it back.
type bufRing struct {
	entries []ioBuf
	base    uintptr // of buffer 0; the buffers follow each other
	size    uint32
	mask    uint16
	tail    uint16 // the next entry to fill; the kernel's copy is in entry 0
}

// ioBuf is struct io_uring_buf. The ring's tail overlays the resv field
// of its first entry.
type ioBuf struct {
	addr uint64
	len  uint32
	bid  uint16
	resv uint16
}

// addr is the address of byte off of buffer bid.
func (b *bufRing) addr(bid uint16, off uint32) uint64 {
	return uint64(b.base) + uint64(bid)*uint64(b.size) + uint64(off)
}

// put gives buffer bid back to the kernel, at once: the entry, then a
// release store of the tail. The tail is the upper half of the 32-bit word
// at offset 12 of entry 0 (little-endian), whose lower half is entry 0's
// bid, so both are written through that word.
func (b *bufRing) put(bid uint16) {
	idx := b.tail & b.mask
	e := &b.entries[idx]
	e.addr = b.addr(bid, 0)
	e.len = b.size
	w := (*uint32)(unsafe.Pointer(&b.entries[0].bid))
	low := atomic.LoadUint32(w) & 0xffff
	if idx == 0 {
		low = uint32(bid)
	} else {
		e.bid = bid
	}
	b.tail++
	atomic.StoreUint32(w, uint32(b.tail)<<16|low)
}

// bufSlab carves buffer rings of n buffers of size bytes out of two
// anonymous mappings, one ring per slot, registered with the io_uring as
// buffer group number slot the first time the slot is taken. The mappings
// are outside Go's heap, so their addresses stay valid for the kernel
// whatever the garbage collector does. A slot given back must have all its
// buffers back in its ring; it is handed out again as it is, still
// registered.
type bufSlab struct {
	r             *ring
	ringMem, data []byte
	stride        int // bytes of ringMem per slot: a page, as the kernel wants rings page-aligned
	n, size       int
	rings         []*bufRing // by slot; the first used are registered
	used          int
	free          []uint16
}

// newBufSlab reserves address space for slots rings (at most 65536) of n
// buffers (a power of two, at most a page's worth of entries) of size
// bytes; memory is touched only as buffers are used.
func newBufSlab(r *ring, slots, n, size int) (*bufSlab, error) {
	stride := unix.Getpagesize()
	if slots > 1<<16 || n&(n-1) != 0 || n*int(unsafe.Sizeof(ioBuf{})) > stride {
		return nil, fmt.Errorf("buffer slab: %d slots of %d buffers does not fit", slots, n)
	}
	ringMem, err := unix.Mmap(-1, 0, slots*stride, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("map buffer rings: %w", err)
	}
	data, err := unix.Mmap(-1, 0, slots*n*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE|unix.MAP_NORESERVE)
	if err != nil {
		unix.Munmap(ringMem)
		return nil, fmt.Errorf("map buffers: %w", err)
	}
	return &bufSlab{r: r, ringMem: ringMem, data: data, stride: stride, n: n, size: size, rings: make([]*bufRing, slots)}, nil
}

// take returns a free slot (its buffer group) and its ring, full.
func (s *bufSlab) take() (uint16, *bufRing, error) {
	if k := len(s.free); k > 0 {
		slot := s.free[k-1]
		s.free = s.free[:k-1]
		return slot, s.rings[slot], nil
	}
	slot := s.used
	if slot == len(s.rings) {
		return 0, nil, fmt.Errorf("take buffer group: all %d in use", len(s.rings))
	}
	mem := s.ringMem[slot*s.stride : (slot+1)*s.stride]
	b := &bufRing{
		entries: unsafe.Slice((*ioBuf)(unsafe.Pointer(&mem[0])), s.n),
		base:    uintptr(unsafe.Pointer(&s.data[slot*s.n*s.size])),
		size:    uint32(s.size),
		mask:    uint16(s.n - 1),
	}
	reg := struct {
		ringAddr    uint64
		ringEntries uint32
		bgid        uint16
		pad         uint16
		resv        [3]uint64
	}{ringAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))), ringEntries: uint32(s.n), bgid: uint16(slot)}
	if _, _, e := unix.RawSyscall6(unix.SYS_IO_URING_REGISTER, uintptr(s.r.fd), registerPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0); e != 0 {
		return 0, nil, fmt.Errorf("register buffer ring: %w", e)
	}
	for i := range s.n {
		b.put(uint16(i))
	}
	s.rings[slot] = b
	s.used++
	return uint16(slot), b, nil
}

// give hands slot back for take to reuse; all its buffers must be back in
// its ring and no request may be using it.
func (s *bufSlab) give(slot uint16) {
	s.free = append(s.free, slot)
}

// Close unmaps the rings and their buffers. The io_uring they are
// registered with must be closed first: the kernel may write into them
// until then.
func (s *bufSlab) Close() error {
	unix.Munmap(s.data)
	return unix.Munmap(s.ringMem)
}
