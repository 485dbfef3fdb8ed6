package ruleset

import (
	"testing"
)

func TestParseAddress(t *testing.T) {
	good := map[string]string{
		"10.0.0.5:5432":        "10.0.0.5:5432",
		"10.0.0.0/8:5432":      "10.0.0.0/8:5432",
		"[2001:db8::5]:22":     "[2001:db8::5]:22",
		"[2001:db8::/32]:22":   "[2001:db8::/32]:22",
		"[::ffff:10.0.0.5]:22": "10.0.0.5:22",
		"DB.Internal:3306":     "db.internal:3306",
		"*:6443":               "*:6443",
		"10.0.0.5:5432-5439":   "10.0.0.5:5432-5439",
		" 127.0.0.2:5432 ":     "127.0.0.2:5432",
	}
	for in, want := range good {
		a, err := ParseAddress(in)
		if err != nil {
			t.Errorf("ParseAddress(%q): %v", in, err)
			continue
		}
		if a.String() != want {
			t.Errorf("ParseAddress(%q) = %s, want %s", in, a, want)
		}
	}
	bad := map[string]string{
		"10.0.0.5":           "no port",
		"10.0.0.5:0":         "invalid port",
		"10.0.0.5:70000":     "invalid port",
		"10.0.0.1/8:5432":    "host bits set",
		"2001:db8::5:22":     "brackets",
		"[10.0.0.5]:22":      "only for IPv6",
		":5432":              "no host",
		"10.0.0.5:5439-5432": "backwards",
		"10.0.0.5:1-2000":    "at most 1024",
		"bad_host!:22":       "invalid hostname",
	}
	for in, want := range bad {
		_, err := ParseAddress(in)
		if err == nil || !contains(err.Error(), want) {
			t.Errorf("ParseAddress(%q) error = %v, want one mentioning %q", in, err, want)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

// FuzzParseAddress: any accepted address prints in a form that parses back
// to the same address, and the port range is sane.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"10.0.0.5:5432", "[2001:db8::/32]:22", "*:1-1024", "db.internal:3306", "[::ffff:1.2.3.4]:5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		if a.PortLo == 0 || a.PortHi < a.PortLo || int(a.PortHi-a.PortLo) >= MaxPortRange {
			t.Fatalf("ParseAddress(%q) port range %d-%d", s, a.PortLo, a.PortHi)
		}
		b, err := ParseAddress(a.String())
		if err != nil {
			t.Fatalf("ParseAddress(%q) = %s, which does not parse back: %v", s, a, err)
		}
		if b != a {
			t.Fatalf("round trip of %q: %+v then %+v", s, a, b)
		}
	})
}
