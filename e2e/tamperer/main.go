// Command tamperer does, as a job process, one thing a job with root could
// do against Sluice, so that the e2e tests can check each is reported:
//
//	tamperer ptrace PID     ptrace(PTRACE_PEEKDATA) on PID (fails: not attached)
//	tamperer bpf            bpf(BPF_PROG_GET_NEXT_ID)
//	tamperer module         finit_module(-1) (fails: bad descriptor)
//	tamperer unlink PATH    unlink(PATH)
//	tamperer signal PID SIG kill(PID, SIG)
//
// The system call's own result does not matter: the attempt is what is
// reported. It prints the result and exits 0.
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tamperer ptrace PID | bpf | module | unlink PATH | signal PID SIG")
		os.Exit(2)
	}
	arg := func(i int) int {
		n, err := strconv.Atoi(os.Args[i])
		if err != nil {
			fmt.Fprintln(os.Stderr, "tamperer: not a number:", os.Args[i])
			os.Exit(2)
		}
		return n
	}
	var err error
	switch os.Args[1] {
	case "ptrace":
		_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKDATA, uintptr(arg(2)), 0, 0, 0, 0)
		err = errno(e)
	case "bpf":
		var attr [16]byte
		_, _, e := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_GET_NEXT_ID, 0, uintptr(len(attr)))
		err = errno(e)
	case "module":
		_, _, e := unix.Syscall(unix.SYS_FINIT_MODULE, ^uintptr(0), 0, 0)
		err = errno(e)
	case "unlink":
		err = unix.Unlink(os.Args[2])
	case "signal":
		err = syscall.Kill(arg(2), syscall.Signal(arg(3)))
	default:
		fmt.Fprintln(os.Stderr, "tamperer: unknown action", os.Args[1])
		os.Exit(2)
	}
	fmt.Printf("%s: %v\n", os.Args[1], err)
}

func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
