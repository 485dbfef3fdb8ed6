package testenv

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Program is the testing.TB testenv's helpers take, for a program that is
// not a test (the demo's server programs, e2e/demokube and
// e2e/demofleet): it runs their cleanups, last first, when the program
// exits, makes their temporary directories below its directory, and exits
// on Fatal and Skip after saying why on stderr. Only the methods testenv's
// server helpers call are implemented; the embedded nil TB makes any other
// panic.
type Program struct {
	testing.TB
	name string
	dir  string

	mu       sync.Mutex
	cleanups []func()
	tmp      int
	failed   bool
	exit     sync.Once
}

// NewProgram returns the Program for the program called name, whose
// temporary directories go below dir. testenv's helpers ask
// testing.Short, which needs testing's flags registered and parsed:
// NewProgram does both, leaving them at their defaults, so the program
// must parse its own flags with a flag.FlagSet of its own.
func NewProgram(name, dir string) *Program {
	testing.Init()
	_ = flagParse()
	return &Program{name: name, dir: dir}
}

func (p *Program) Helper() {}

func (p *Program) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, p.name+": "+format+"\n", args...)
}

func (p *Program) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

func (p *Program) TempDir() string {
	p.mu.Lock()
	p.tmp++
	d := filepath.Join(p.dir, fmt.Sprintf("%03d", p.tmp))
	p.mu.Unlock()
	if err := os.Mkdir(d, 0o700); err != nil {
		p.Fatal(err)
	}
	p.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func (p *Program) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

func (p *Program) Fatal(args ...any) { p.fail(fmt.Sprint(args...)) }
func (p *Program) Fatalf(format string, args ...any) {
	p.fail(fmt.Sprintf(format, args...))
}
func (p *Program) Skip(args ...any) { p.fail(fmt.Sprint(args...)) }

func (p *Program) fail(msg string) {
	fmt.Fprintln(os.Stderr, p.name+": "+msg)
	p.mu.Lock()
	p.failed = true
	p.mu.Unlock()
	p.Exit(1)
}

// Exit runs the cleanups, last first, once, and exits with code. A second
// caller (a signal during a failure's cleanup) waits for the first.
func (p *Program) Exit(code int) {
	p.exit.Do(func() {
		p.mu.Lock()
		cs := p.cleanups
		p.cleanups = nil
		p.mu.Unlock()
		for i := len(cs) - 1; i >= 0; i-- {
			cs[i]()
		}
		os.Exit(code)
	})
	runtime.Goexit()
}

// flagParse parses the command line's registered testing flags from no
// arguments, so they hold their defaults.
func flagParse() error { return flag.CommandLine.Parse(nil) }
