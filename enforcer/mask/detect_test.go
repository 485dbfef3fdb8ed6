package mask

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

// TestDetectorsInSync keeps this package's detectors and the ruleset's
// list the same.
func TestDetectorsInSync(t *testing.T) {
	var mine []string
	for n := range builtins {
		mine = append(mine, n)
	}
	sort.Strings(mine)
	theirs := ruleset.Detectors()
	sort.Strings(theirs)
	if !slices.Equal(mine, theirs) {
		t.Errorf("detectors here %v, in the ruleset %v", mine, theirs)
	}
	for _, f := range ruleset.MaskFuncs() {
		if _, err := FuncFor(&ruleset.MaskSpec{Using: f}, []byte("k")); err != nil {
			t.Errorf("function %s: %v", f, err)
		}
	}
}

func found(name, s string) []string {
	var out []string
	for _, sp := range builtins[name]([]byte(s), 0, nil) {
		out = append(out, s[sp.lo:sp.hi])
	}
	return out
}

func TestDetectors(t *testing.T) {
	const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	const pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n-----END RSA PRIVATE KEY-----"
	tests := []struct {
		det, in string
		want    []string
	}{
		{"email", "contact alice.smith+ci@example.co.uk now", []string{"alice.smith+ci@example.co.uk"}},
		{"email", "Key (email)=(bob@corp.example.com) already exists.", []string{"bob@corp.example.com"}},
		{"email", "a@b.c, @example.com, x@localhost, user@", nil},
		{"email", "me@host.example.", []string{"me@host.example"}},

		{"card_number", "card 4111111111111111 ok", []string{"4111111111111111"}},
		{"card_number", "4111-1111-1111-1111", []string{"4111-1111-1111-1111"}},
		{"card_number", "amex 3782 822463 10005.", []string{"3782 822463 10005"}},
		{"card_number", "5555 5555 5555 4444 and 6011111111111117", []string{"5555 5555 5555 4444", "6011111111111117"}},
		{"card_number", "4111111111111112", nil},        // Luhn fails
		{"card_number", "1700000000000000", nil},        // starts with 1 (timestamps)
		{"card_number", "2024-01-15 10:30:00", nil},     // date
		{"card_number", "41111111111111111111111", nil}, // too long
		{"card_number", "id4111111111111111", nil},      // part of a word
		{"card_number", "550e8400-e29b-41d4-a716-446655440000", nil},
		{"card_number", "ref 4111 1111 1111 1111 2024", []string{"4111 1111 1111 1111"}},

		{"ssn", "ssn 123-45-6789.", []string{"123-45-6789"}},
		{"ssn", "000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000", nil},
		{"ssn", "2024-05-06 123456789 12-345-6789 1123-45-6789 123-45-67890", nil},

		{"iban", "pay DE89370400440532013000 today", []string{"DE89370400440532013000"}},
		{"iban", "GB82 WEST 1234 5698 7654 32", []string{"GB82 WEST 1234 5698 7654 32"}},
		{"iban", "GB82 WEST 1234 5698 7654 32 ABCD", []string{"GB82 WEST 1234 5698 7654 32"}},
		{"iban", "DE89370400440532013001", nil}, // check digits wrong
		{"iban", "AB12CDEFGHIJKLMNOP", nil},

		{"phone", "call +1 212-555-0134 now", []string{"+1 212-555-0134"}},
		{"phone", "+44 20 7946 0958", []string{"+44 20 7946 0958"}},
		{"phone", "+4915112345678", []string{"+4915112345678"}},
		{"phone", "+1 (212) 555-0134", []string{"+1 (212) 555-0134"}},
		{"phone", "(212) 555-0134", []string{"(212) 555-0134"}},
		{"phone", "212-555-0134, 212.555.0134; 1-212-555-0134", []string{"212-555-0134", "212.555.0134", "1-212-555-0134"}},
		{"phone", "2125550134 12125550134 42", nil},                   // plain numbers
		{"phone", "2024-01-15 192.168.1.10 123-45-6789 3.14159", nil}, // dates, IPs, SSNs
		{"phone", "112-555-0134 212-155-0134 212-555-01345", nil},     // invalid NANP
		{"phone", "v1.2.3 +12 1+2", nil},

		{"jwt", "Bearer " + jwt + " x", []string{jwt}},
		{"jwt", "eyJub3QiOiJhIGp3dCJ9.eyJ4IjoxfQ.sig", nil}, // header without alg
		{"jwt", "eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.", []string{"eyJhbGciOiJub25lIn0.eyJ4IjoxfQ."}},

		{"aws_access_key", "key AKIAIOSFODNN7EXAMPLE,", []string{"AKIAIOSFODNN7EXAMPLE"}},
		{"aws_access_key", "ASIAY34FZKBOKMUTVV7A", []string{"ASIAY34FZKBOKMUTVV7A"}},
		{"aws_access_key", "AKIAIOSFODNN7EXAMPLEX AKIAiosfodnn7example XAKIAIOSFODNN7EXAMPLE", nil},

		{"private_key", "key:\n" + pem + "\nend", []string{pem}},
		{"private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", []string{"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"}},
		{"private_key", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", nil},

		{"secret", "token=ghp_R7x2Kq9LmZp4Wt8Yv3Nb6Hd1Fs5Gj0Ac tail", []string{"ghp_R7x2Kq9LmZp4Wt8Yv3Nb6Hd1Fs5Gj0Ac"}},
		{"secret", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", []string{"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}},
		{"secret", "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", nil},
		{"secret", "550e8400-e29b-41d4-a716-446655440000", nil},
		{"secret", "user_password_hash_v2_column and ThisIsAVeryLongSentenceWithoutDigits", nil},
		{"secret", "Password1Password1Password1", nil}, // repetitive: low entropy
		{"secret", "2024-01-15T10:30:00.000000Z", nil},
		{"secret", "Ab1Ab1", nil},

		{"ip_address", "from 192.168.1.10:5432 and 10.0.0.1.", []string{"192.168.1.10", "10.0.0.1"}},
		{"ip_address", "host 2001:db8::1 and ::1", []string{"2001:db8::1", "::1"}},
		{"ip_address", "256.1.1.1 1.2.3 10:30:00 00:1a:2b:3c:4d:5e 1.2.3.4.5", nil},
	}
	for _, tt := range tests {
		t.Run(tt.det+"/"+tt.in, func(t *testing.T) {
			if got := found(tt.det, tt.in); !slices.Equal(got, tt.want) {
				t.Errorf("%s(%q) = %q, want %q", tt.det, tt.in, got, tt.want)
			}
		})
	}
}

// TestDetectorsNoPanic runs every detector over edge inputs: truncations
// of each match shape.
func TestDetectorsNoPanic(t *testing.T) {
	inputs := []string{"", "@", "+", "(", "eyJ", "eyJ.", "eyJa.b", "-----BEGIN ", "-----BEGIN X PRIVATE KEY-----",
		"AKIA", "DE89 ", "123-45-", "(212) 555-", "+1 (", "1-", "::", "1.2.3.", "a@b.", strings.Repeat("9", 100)}
	for _, in := range inputs {
		for n := range len(in) + 1 {
			for name, f := range builtins {
				for _, sp := range f([]byte(in[:n]), 0, nil) {
					if sp.lo < 0 || sp.hi > n || sp.lo >= sp.hi {
						t.Errorf("%s(%q): bad span %v", name, in[:n], sp)
					}
				}
			}
		}
	}
}
