package mask

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// gateCorpus holds values every built-in detector matches, and near
// misses of each.
var gateCorpus = []string{
	"contact alice.smith+ci@example.co.uk now", "a@b.c, @example.com, x@localhost", "me@host.example.",
	"card 4111111111111111 ok", "4111-1111-1111-1111", "amex 3782 822463 10005.", "5555 5555 5555 4444 and 6011111111111117",
	"4111111111111112", "1700000000000000", "ref 4111 1111 1111 1111 2024", "41111111111111111111111",
	"ssn 123-45-6789.", "000-12-3456 666-12-3456 900-12-3456 123-00-4567", "2024-05-06 123456789 12-345-6789",
	"pay DE89370400440532013000 today", "GB82 WEST 1234 5698 7654 32", "GB82 WEST 1234 5698 7654 32 ABCD", "DE89370400440532013001",
	"call +1 212-555-0134 now", "+44 20 7946 0958", "+4915112345678", "+1 (212) 555-0134", "(212) 555-0134",
	"212-555-0134, 212.555.0134; 1-212-555-0134", "+1(212) (555)1234", "+49 (30) 1234-5678", "2125550134 12125550134 42",
	"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
	"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "key AKIAIOSFODNN7EXAMPLE and ASIAY34FZKBOKMUTVV7A", "AKIAIOSFODNN7EXAMPL",
	"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn\n-----END RSA PRIVATE KEY-----",
	"-----BEGIN PRIVATE KEY-----\nMIIE", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
	"token ghp_R7x2Kq9LmZp4Wt8Yv3Nb6Hd1Fs5Gj0Ac", "sk_live_51H8xYzAbCdEfGh12345678", "550e8400-e29b-41d4-a716-446655440000",
	"host 10.0.0.5 and 192.168.1.254, fe80::1ff:fe23:4567:890a", "::1", "2001:db8::8a2e:370:7334", "v1.2.3.4", "10:30:00",
	"2024-01-15 10:30:00 INFO request id=42 path=/api/v1/items status=200",
	"83868641912-28773972837-60736120486-75867961291-34954843101", "123-45-6789-1 x123-45-6789 -123-45-6789 123-45-67890 123-45-6789",
}

// gatePieces are fragments random values are built from: every
// detector's landmarks and separators, so matches and near misses are
// frequent.
var gatePieces = []string{
	"0", "1", "2", "4", "5", "9", "41", "555", "0134", "6789", "4111", " ", "-", ".", "(", ")", "+", "@", ":", "::", "_", "=", "/",
	"\n", "a", "x", "e", "J", "A", "Z", "K", "S", "I", "DE", "GB82", "eyJ", "AKIA", "ASIA", "-----BEGIN ", "PRIVATE KEY-----",
	"-----END ", "@example.com", "alice", "Qx7", "R7x2Kq9L", "mZp4Wt8Y", "eyJhbGciOiJub25lIn0", ".eyJzdWIiOiJ4In0.",
}

// randomValue builds a value of pieces and corpus fragments.
func randomValue(rng *rand.Rand) string {
	var sb strings.Builder
	for n := rng.IntN(24); n > 0; n-- {
		if rng.IntN(10) == 0 {
			c := gateCorpus[rng.IntN(len(gateCorpus))]
			i, j := rng.IntN(len(c)+1), rng.IntN(len(c)+1)
			sb.WriteString(c[min(i, j):max(i, j)])
			continue
		}
		sb.WriteString(gatePieces[rng.IntN(len(gatePieces))])
	}
	return sb.String()
}

// checkGates requires that no built-in detector finds anything in a
// value its need rules out, and that the masker's scan, which skips
// those detectors, returns what running every detector returns.
func checkGates(t *testing.T, m *Masker, v []byte, found map[string]int) {
	t.Helper()
	p := profileOf(v)
	if p.digits >= minRunDigits {
		if c, ph := runsRef(v); p.cardRun != c || p.phoneRun != ph {
			t.Fatalf("profile of %q has runs %d and %d, want %d and %d", v, p.cardRun, p.phoneRun, c, ph)
		}
	}
	for name, find := range builtins {
		spans := find(v, 0, nil)
		found[name] += len(spans)
		if ref, ok := refFinders[name]; ok {
			if want := ref(v, 0, nil); !slices.Equal(spans, want) {
				t.Fatalf("%s finds %v in %q, its reference %v", name, spans, v, want)
			}
		}
		nd, ok := needs[name]
		if ok && !nd.met(&p) && len(spans) > 0 {
			t.Fatalf("%s finds %q in %q, but its need %+v rules out the value (profile %+v)",
				name, v[spans[0].lo:spans[0].hi], v, nd, p)
		}
	}
	var every []span
	for i := range m.dets {
		every = m.dets[i].find(v, i, every)
	}
	want := mergeSpans(every)
	if got := m.scan(v, nil); !slices.Equal(got, want) {
		t.Fatalf("scan(%q) = %v, every detector gives %v", v, got, want)
	}
}

func allDetectorsMasker(t testing.TB) *Masker {
	return mustNew(t, maskRule("d", ruleset.MaskSpec{Detect: ruleset.Detectors()}))
}

// TestDetectorGates runs every built-in detector over the corpus and
// over 200,000 random values built from detector landmarks, and compares
// the gated scan with running every detector.
func TestDetectorGates(t *testing.T) {
	m := allDetectorsMasker(t)
	found := map[string]int{}
	for _, c := range gateCorpus {
		checkGates(t, m, []byte(c), found)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	n := 200000
	if testing.Short() {
		n = 20000
	}
	for range n {
		checkGates(t, m, []byte(randomValue(rng)), found)
	}
	// The comparison means something only if every detector matched.
	t.Logf("matches per detector: %v", found)
	for _, name := range ruleset.Detectors() {
		if found[name] < 5 {
			t.Errorf("detector %s matched %d times; the inputs do not exercise it", name, found[name])
		}
	}
}

// FuzzDetectorGates checks the gates on arbitrary values.
func FuzzDetectorGates(f *testing.F) {
	for _, c := range gateCorpus {
		f.Add(c)
	}
	m := allDetectorsMasker(f)
	f.Fuzz(func(t *testing.T, v string) {
		checkGates(t, m, []byte(v), map[string]int{})
	})
}
