package evloop

// The io_uring ABI the uring core uses, written out by hand against
// golang.org/x/sys/unix, which has the system call numbers but none of the
// structures (the module proxy serves no Go binding). Values and layouts
// are those of include/uapi/linux/io_uring.h; the layouts were first
// written for bench/relayfloor/uring.go and are checked here by size.

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

const (
	urOffSQRing = 0
	urOffSQEs   = 0x10000000

	urSetupCQSize       = 1 << 3
	urSetupSubmitAll    = 1 << 7
	urSetupSingleIssuer = 1 << 12
	urSetupDeferTaskrun = 1 << 13

	urFeatSingleMmap = 1 << 0
	urFeatNoDrop     = 1 << 1
	urFeatFastPoll   = 1 << 5

	urEnterGetEvents = 1 << 0

	urRegisterPbufRing = 22

	urOpPollAdd     = 6
	urOpAsyncCancel = 14
	urOpSend        = 26
	urOpRecv        = 27

	urSQEBufferSelect = 1 << 5

	urPollAddMulti  = 1 << 0 // in a poll's len
	urRecvMultishot = 1 << 1 // in a recv's ioprio

	urCancelAll = 1 << 0 // in an async cancel's cancel_flags
	urCancelFD  = 1 << 1

	urCQEFBuffer     = 1 << 0
	urCQEFMore       = 1 << 1
	urCQEBufferShift = 16
)

type urSQOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type urCQOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type urParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  urSQOffsets
	cqOff                                                                  urCQOffsets
}

// urSQE is struct io_uring_sqe (64 bytes), with the unions named for the
// fields the core uses.
type urSQE struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64 // a cancel: the user data to match
	len      uint32 // a poll: its flags
	opFlags  uint32 // msg_flags, poll32_events, cancel_flags
	userData uint64
	bufGroup uint16
	_        uint16 // personality
	_        int32  // splice_fd_in, file_index
	_        [2]uint64
}

// urCQE is struct io_uring_cqe (16 bytes; the ring is not set up with
// CQE32).
type urCQE struct {
	userData uint64
	res      int32
	flags    uint32
}

// urBuf is struct io_uring_buf. A buffer ring's tail overlays the resv
// field of its first entry.
type urBuf struct {
	addr uint64
	len  uint32
	bid  uint16
	resv uint16
}

// The layouts above, checked: a size that differs fails the build.
var (
	_ [64]byte  = [unsafe.Sizeof(urSQE{})]byte{}
	_ [16]byte  = [unsafe.Sizeof(urCQE{})]byte{}
	_ [120]byte = [unsafe.Sizeof(urParams{})]byte{}
	_ [16]byte  = [unsafe.Sizeof(urBuf{})]byte{}
)

// urRing is an io_uring instance owned by one locked OS thread: it must be
// created, fed and reaped by that thread (IORING_SETUP_SINGLE_ISSUER), and
// with IORING_SETUP_DEFER_TASKRUN the kernel posts completions only while
// that thread is in io_uring_enter waiting for events, so the thread is
// woken once per batch rather than once per completion.
type urRing struct {
	fd     int
	rings  []byte // the SQ and CQ rings, one mapping (IORING_FEAT_SINGLE_MMAP)
	sqeMem []byte

	sqHead, sqTail *uint32
	sqMask         uint32
	sqes           []urSQE
	tail           uint32 // our SQ tail, published to the kernel by enter

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           []urCQE
	batch          []urCQE // completions handed out by reap

	intr bool // the last io_uring_enter was interrupted (EINTR)
}

// urNewRing sets up an io_uring with sqEntries submission slots and
// cqEntries completion slots, and maps its rings. It is to be called on
// the thread that will own the ring. close releases it.
func urNewRing(sqEntries, cqEntries uint32) (*urRing, error) {
	p := urParams{flags: urSetupCQSize | urSetupSubmitAll | urSetupSingleIssuer | urSetupDeferTaskrun, cqEntries: cqEntries}
	fd, _, e := unix.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(sqEntries), uintptr(unsafe.Pointer(&p)), 0)
	if e == unix.EINVAL { // before 6.1: no DEFER_TASKRUN; completions then wake the thread as they come
		p = urParams{flags: urSetupCQSize | urSetupSubmitAll, cqEntries: cqEntries}
		fd, _, e = unix.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(sqEntries), uintptr(unsafe.Pointer(&p)), 0)
	}
	if e != 0 {
		return nil, fmt.Errorf("set up io_uring: %w", e)
	}
	r := &urRing{fd: int(fd)}
	const want = urFeatSingleMmap | urFeatNoDrop | urFeatFastPoll
	if p.features&want != want {
		r.close()
		return nil, errors.New("set up io_uring: the kernel lacks single mmap, no-drop or fast poll (5.7)")
	}
	size := max(p.sqOff.array+4*p.sqEntries, p.cqOff.cqes+uint32(unsafe.Sizeof(urCQE{}))*p.cqEntries)
	var err error
	if r.rings, err = unix.Mmap(r.fd, urOffSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("map io_uring rings: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, urOffSQEs, int(p.sqEntries)*int(unsafe.Sizeof(urSQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.close()
		return nil, fmt.Errorf("map io_uring submission entries: %w", err)
	}
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.rings[off])) }
	r.sqHead, r.sqTail, r.sqMask = u32(p.sqOff.head), u32(p.sqOff.tail), *u32(p.sqOff.ringMask)
	r.cqHead, r.cqTail, r.cqMask = u32(p.cqOff.head), u32(p.cqOff.tail), *u32(p.cqOff.ringMask)
	r.sqes = unsafe.Slice((*urSQE)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqes = unsafe.Slice((*urCQE)(unsafe.Pointer(&r.rings[p.cqOff.cqes])), p.cqEntries)
	// Slot i of the SQ always names entry i, so the index array is filled
	// once and the tail alone says what is new.
	array := unsafe.Slice(u32(p.sqOff.array), p.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.tail = atomic.LoadUint32(r.sqTail)
	return r, nil
}

// close unmaps the rings and closes the ring's descriptor. The kernel then
// cancels the requests still in flight, drops the file references they
// hold, and frees the ring once they are gone; completions not yet reaped
// are lost.
func (r *urRing) close() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.rings != nil {
		unix.Munmap(r.rings)
	}
	unix.Close(r.fd)
}

// next returns a zeroed submission entry to fill in. It goes to the kernel
// with the next enter; when the queue is full, next submits what is queued
// first, without waiting.
func (r *urRing) next() (*urSQE, error) {
	for r.tail-atomic.LoadUint32(r.sqHead) == uint32(len(r.sqes)) {
		switch e := r.enter(0); e {
		case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY:
		default:
			return nil, fmt.Errorf("enter io_uring: %w", e)
		}
	}
	s := &r.sqes[r.tail&r.sqMask]
	*s = urSQE{}
	r.tail++
	return s, nil
}

// enter hands the kernel every queued entry and, with wait > 0, waits in
// the same io_uring_enter until at least wait completions are ready.
// EINTR, EAGAIN and EBUSY are for the caller to take as "reap and enter
// again".
//
// io_uring_enter is a raw system call, even when it waits: the core's
// goroutine then keeps its P (it has no other goroutine to give it to,
// and GOMAXPROCS was raised by one for it), and sysmon does not hand the P
// to another thread at every tick as it would for an ordinary blocking
// system call. The price is that the runtime cannot stop the goroutine
// while it is inside: a stop-the-world, a GC stack scan or sysmon's
// preemption sends a signal (SIGURG), which ends the wait with EINTR (io_uring
// does not restart it), and the goroutine must then reach a point where the
// runtime may stop it before it waits again. urSafePoint is that point, and
// every io_uring_enter of the core goes through here.
func (r *urRing) enter(wait uint32) syscall.Errno {
	urSafePoint(r.intr)
	atomic.StoreUint32(r.sqTail, r.tail)
	// The kernel's SQ head says how much it has taken, whatever an
	// earlier, interrupted io_uring_enter returned.
	n := r.tail - atomic.LoadUint32(r.sqHead)
	if n == 0 && wait == 0 {
		r.intr = false
		return 0
	}
	var flags uintptr
	if wait > 0 {
		flags = urEnterGetEvents
	}
	_, _, e := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), flags, 0, 0)
	r.intr = e == unix.EINTR
	if r.intr {
		urInterrupted.Add(1)
	}
	return e
}

// urInterrupted counts the io_uring_enter calls that a signal ended
// (EINTR); the tests read it to see the preemption path taken.
var urInterrupted atomic.Int64

// urSafePoint is where the core's goroutine lets the runtime stop it. It
// must stay a real call: not inlined (go:noinline), and not a leaf, since
// the compiler leaves the stack check out of small leaf functions, and the
// stack check in a function's prologue is what notices a pending
// preemption request (the runtime sets the goroutine's stack guard so that
// the check fails) and parks the goroutine for a stop-the-world or lets a
// GC scan its stack. After an interrupted wait it also yields outright
// (runtime.Gosched, the documented way to let the scheduler run), so that
// the guarantee does not rest on the stack check alone.
//
//go:noinline
func urSafePoint(interrupted bool) {
	if interrupted {
		runtime.Gosched()
	}
}

// reap returns the completions that are ready and hands their slots back
// to the kernel. The slice is valid until the next call to reap.
func (r *urRing) reap() []urCQE {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	r.batch = r.batch[:0]
	for ; head != tail; head++ {
		r.batch = append(r.batch, r.cqes[head&r.cqMask])
	}
	atomic.StoreUint32(r.cqHead, head)
	return r.batch
}

// urBufRing is a ring of provided buffers (IORING_REGISTER_PBUF_RING), one
// buffer group, from which the kernel picks a buffer for each receive
// completion. A buffer the kernel picked is ours until put hands it back.
type urBufRing struct {
	entries []urBuf
	base    uintptr // of buffer 0; the buffers follow each other
	data    []byte  // the buffers' memory, from base
	size    uint32
	mask    uint16
	tail    uint16 // the next entry to fill; the kernel's copy is in entry 0
	ready   bool   // registered, its buffers in its ring
}

// addr is the address of byte off of buffer bid.
func (b *urBufRing) addr(bid uint16, off uint32) uint64 {
	return uint64(b.base) + uint64(bid)*uint64(b.size) + uint64(off)
}

// bytes is bytes [off, end) of buffer bid.
func (b *urBufRing) bytes(bid uint16, off, end uint32) []byte {
	at := uint32(bid) * b.size
	return b.data[at+off : at+end]
}

// put gives buffer bid back to the kernel, at once: the entry, then a
// release store of the tail. The tail is the 16-bit resv field of entry 0,
// which shares the 32-bit word at offset 12 with entry 0's bid, so both
// are written through that word.
func (b *urBufRing) put(bid uint16) {
	idx := b.tail & b.mask
	e := &b.entries[idx]
	e.addr = b.addr(bid, 0)
	e.len = b.size
	if idx != 0 {
		e.bid = bid
	}
	b.tail++
	w := (*uint32)(unsafe.Pointer(&b.entries[0].bid))
	var bid0 uint16
	if idx == 0 {
		bid0 = bid
	} else if cpu.IsBigEndian {
		bid0 = uint16(atomic.LoadUint32(w) >> 16)
	} else {
		bid0 = uint16(atomic.LoadUint32(w))
	}
	if cpu.IsBigEndian {
		atomic.StoreUint32(w, uint32(bid0)<<16|uint32(b.tail))
	} else {
		atomic.StoreUint32(w, uint32(b.tail)<<16|uint32(bid0))
	}
}

// urSlab holds the buffer groups of the core's ring: group g is a ring of
// urBufs buffers of urBufSize bytes, registered with the io_uring as buffer
// group g the first time it is used and kept registered for reuse. Memory
// is mapped urChunkGroups groups at a time, as sessions need it, outside
// Go's heap (the addresses stay valid for the kernel whatever the garbage
// collector does), and is never unmapped: a ring the kernel could still
// write into must not go away, and the core keeps its groups for its life.
type urSlab struct {
	r      *urRing
	page   int
	groups []*urBufRing // by group id; nil until first used
}

// urChunkGroups is how many groups' worth of memory is mapped at a time.
const urChunkGroups = 128

func urNewSlab(r *urRing, groups int) *urSlab {
	return &urSlab{r: r, page: unix.Getpagesize(), groups: make([]*urBufRing, groups)}
}

// group returns buffer group g (< 65536) with every buffer in its ring,
// mapping and registering it on first use.
func (s *urSlab) group(g int) (*urBufRing, error) {
	if b := s.groups[g]; b != nil && b.ready {
		return b, nil
	}
	if s.groups[g] == nil {
		if err := s.mapChunk(g - g%urChunkGroups); err != nil {
			return nil, err
		}
	}
	b := s.groups[g]
	reg := struct {
		ringAddr    uint64
		ringEntries uint32
		bgid        uint16
		pad         uint16
		resv        [3]uint64
	}{ringAddr: uint64(uintptr(unsafe.Pointer(&b.entries[0]))), ringEntries: urBufs, bgid: uint16(g)}
	if _, _, e := unix.RawSyscall6(unix.SYS_IO_URING_REGISTER, uintptr(s.r.fd), urRegisterPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0); e != 0 {
		return nil, fmt.Errorf("register buffer ring: %w", e)
	}
	for i := range urBufs {
		b.put(uint16(i))
	}
	b.ready = true
	return b, nil
}

// mapChunk maps the memory of groups first to first+urChunkGroups-1 and
// leaves each group's ring in s.groups, not yet registered; group
// registers the ones it hands out. A ring takes a page of its own,
// as the kernel wants rings page-aligned.
func (s *urSlab) mapChunk(first int) error {
	n := min(urChunkGroups, len(s.groups)-first)
	flags := unix.MAP_ANON | unix.MAP_PRIVATE | unix.MAP_NORESERVE
	ringMem, err := unix.Mmap(-1, 0, n*s.page, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return fmt.Errorf("map buffer rings: %w", err)
	}
	data, err := unix.Mmap(-1, 0, n*urBufs*urBufSize, unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		unix.Munmap(ringMem)
		return fmt.Errorf("map buffers: %w", err)
	}
	// A child process has no use for them, and a pinned ring page copied
	// on write into a child would no longer be the one the kernel reads.
	unix.Madvise(ringMem, unix.MADV_DONTFORK)
	unix.Madvise(data, unix.MADV_DONTFORK)
	for k := range n {
		s.groups[first+k] = &urBufRing{
			entries: unsafe.Slice((*urBuf)(unsafe.Pointer(&ringMem[k*s.page])), urBufs),
			base:    uintptr(unsafe.Pointer(&data[k*urBufs*urBufSize])),
			data:    data[k*urBufs*urBufSize : (k+1)*urBufs*urBufSize],
			size:    urBufSize,
			mask:    urBufs - 1,
		}
	}
	return nil
}
