package deptest

import (
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/sluicehq/sluice"

// allowed lists, per package prefix, which of the module's packages it may
// import directly. internal/testenv and test files are not checked: tests
// may reach anything.
var allowed = map[string][]string{
	"ruleset":             {},
	"enforcer":            {"ruleset", "enforcer", "internal/atomicfile"},
	"decoder":             {"enforcer", "ruleset", "decoder", "internal/tlsutil"},
	"interceptor":         {"bpf", "decoder", "enforcer", "ruleset", "internal/api", "internal/procfs"},
	"internal/procfs":     {},
	"bpf":                 {},
	"internal/api":        {},
	"cmd":                 {"daemon", "interceptor", "decoder", "enforcer", "ruleset", "bpf", "internal/api", "internal/tlsutil", "internal/sshca", "internal/atomicfile", "internal/version", "internal/rulesource"},
	"daemon":              {"interceptor", "decoder", "enforcer", "ruleset", "bpf", "internal/api", "internal/tlsutil", "internal/sshca", "internal/version", "internal/rulesource"},
	"internal/tlsutil":    {},
	"internal/sshca":      {"internal/atomicfile"},
	"internal/atomicfile": {},
	"internal/version":    {},
	"internal/rulesource": {"ruleset", "internal/atomicfile"},
	"packaging":           {"packaging", "internal/version"},
}

// bpfThirdParty is the only outside module bpf may import.
const bpfThirdParty = "github.com/cilium/ebpf"

type pkg struct {
	ImportPath string
	Imports    []string
}

func TestDependencyDirection(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", mod+"/...")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(out)
	n := 0
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		n++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, mod), "/")
		rules, ok := rulesFor(rel)
		if !ok {
			continue
		}
		for _, imp := range p.Imports {
			if rel == "bpf" && strings.Contains(imp, ".") && !strings.HasPrefix(imp, bpfThirdParty) {
				t.Errorf("bpf imports %s: it may import only %s and the standard library", imp, bpfThirdParty)
			}
			if !strings.HasPrefix(imp, mod+"/") {
				continue
			}
			target := strings.TrimPrefix(imp, mod+"/")
			if !permitted(target, rules) {
				t.Errorf("%s imports %s: against the dependency direction (allowed: %v)", rel, target, rules)
			}
			if msg := crossDecoder(rel, target); msg != "" {
				t.Error(msg)
			}
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	if n < 5 {
		t.Fatalf("go list found only %d packages; the check is not looking at the module", n)
	}
}

// protocolOf returns the protocol folder a package below decoder/ belongs
// to ("postgres" for decoder/postgres and its subpackages), or "" for the
// shared layer (decoder itself and decoder/internal/...).
func protocolOf(rel string) string {
	rest, ok := strings.CutPrefix(rel, "decoder/")
	if !ok {
		return ""
	}
	p, _, _ := strings.Cut(rest, "/")
	if p == "internal" {
		return ""
	}
	return p
}

// crossDecoder says what is wrong when a package below decoder/ imports
// a protocol it must not: protocols never import each other, and the
// shared layer never imports a protocol. decoder/all, the registration
// list, imports every protocol.
func crossDecoder(rel, target string) string {
	from, to := protocolOf(rel), protocolOf(target)
	switch {
	case !strings.HasPrefix(rel, "decoder") || to == "" || from == to || from == "all":
		return ""
	case from == "":
		return fmt.Sprintf("%s imports the protocol %s: the shared layer never imports a protocol (a protocol registers itself with decoder.Register)", rel, target)
	}
	return fmt.Sprintf("%s imports %s: protocols never import each other; move what both need into the shared layer (package decoder)", rel, target)
}

func rulesFor(rel string) ([]string, bool) {
	best, found := "", false
	for prefix := range allowed {
		if (rel == prefix || strings.HasPrefix(rel, prefix+"/")) && len(prefix) >= len(best) {
			best, found = prefix, true
		}
	}
	return allowed[best], found
}

func permitted(target string, rules []string) bool {
	for _, r := range rules {
		if target == r || strings.HasPrefix(target, r+"/") {
			return true
		}
	}
	return false
}

// TestCrossDecoder: the rule about imports between decoders, on its own.
func TestCrossDecoder(t *testing.T) {
	for _, c := range []struct {
		from, to string
		bad      bool
	}{
		{"decoder/postgres", "decoder", false},
		{"decoder/postgres", "decoder/internal/rawio", false},
		{"decoder/postgres", "decoder/tcp", true},
		{"decoder/mysql", "decoder/postgres/sub", true},
		{"decoder", "decoder/postgres", true},
		{"decoder/internal/rawio", "decoder/ssh", true},
		{"decoder/all", "decoder/postgres", false},
		{"decoder/postgres", "decoder/postgres/sub", false},
		{"cmd/sluiced", "decoder/postgres", false},
	} {
		if got := crossDecoder(c.from, c.to) != ""; got != c.bad {
			t.Errorf("%s importing %s: flagged %t, want %t", c.from, c.to, got, c.bad)
		}
	}
}
