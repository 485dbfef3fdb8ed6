package ruleset

import (
	"strings"
	"testing"
)

func TestMaskSpec(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "x.hcl": `
detector "employee_id" {
  pattern     = "EMP-[0-9]{6}"
  description = "HR employee numbers"
}
policy "p" {
  targets = ["db"]
  mask "defaults" {
    columns = ["users.email"]
  }
  mask "partial" {
    columns = ["public.users.card", "*.phone", "users.*_token", "a\\.b.c"]
    using   = "partial"
    keep    = 2
  }
  mask "redact" {
    detect      = ["email", "employee_id", "aws_access_key", "private_key"]
    replacement = "***"
  }
  mask "hash" {
    columns = ["ssn"]
    using   = "hash"
  }
}
`})
	get := func(id string) *MaskSpec {
		t.Helper()
		r := rs.Rule(id)
		if r == nil || r.Mask == nil {
			t.Fatalf("no mask rule %s", id)
		}
		return r.Mask
	}
	if m := get("p/mask/defaults"); m.Using != "redact" || m.Keep != DefaultKeep || m.Replacement != DefaultReplacement || m.Custom != nil {
		t.Errorf("defaults: %+v", m)
	}
	if m := get("p/mask/partial"); m.Using != "partial" || m.Keep != 2 || len(m.Columns) != 4 {
		t.Errorf("partial: %+v", m)
	}
	m := get("p/mask/redact")
	if m.Replacement != "***" || len(m.Custom) != 1 || m.Custom["employee_id"] == nil {
		t.Fatalf("redact: %+v", m)
	}
	if !m.Custom["employee_id"].MatchString("id EMP-123456") {
		t.Error("custom pattern does not match")
	}
	if rs.Detector("employee_id") != m.Custom["employee_id"] || rs.Detector("email") != nil {
		t.Error("Detector does not return the compiled pattern")
	}
	if got := rs.CustomDetectors(); len(got) != 1 || got[0] != "employee_id" {
		t.Errorf("CustomDetectors = %v", got)
	}
	if m := get("p/mask/hash"); m.Using != "hash" {
		t.Errorf("hash: %+v", m)
	}
}

// TestMaskFuncsAndDetectors keeps the lists the enforcer implements in
// view: a rename here must be made there too.
func TestMaskFuncsAndDetectors(t *testing.T) {
	if got := strings.Join(MaskFuncs(), ","); got != "redact,partial,hash,email,null,digits" {
		t.Errorf("MaskFuncs = %s", got)
	}
	for _, d := range []string{"secret", "jwt", "card_number", "iban", "ssn", "email", "phone", "aws_access_key", "private_key", "ip_address"} {
		if !hasString(Detectors(), d) {
			t.Errorf("Detectors lacks %s", d)
		}
	}
}

func TestMaskDiagnostics(t *testing.T) {
	const pol = "policy \"p\" {\n  targets = [\"db\"]\n"
	tests := []struct {
		name, src, summary string
		line, col          int
	}{
		{"unknown using", pol + `  mask {
    columns = ["a"]
    using   = "scramble"
  }
}`, "Invalid value for using", 5, 15},
		{"keep without partial", pol + `  mask {
    columns = ["a"]
    using   = "hash"
    keep    = 2
  }
}`, "Unused argument", 6, 5},
		{"keep with default using", pol + `  mask {
    columns = ["a"]
    keep    = 2
  }
}`, "Unused argument", 5, 5},
		{"keep negative", pol + `  mask {
    columns = ["a"]
    using   = "partial"
    keep    = -1
  }
}`, "Invalid keep", 6, 15},
		{"keep too large", pol + `  mask {
    columns = ["a"]
    using   = "partial"
    keep    = 1000
  }
}`, "Invalid keep", 6, 15},
		{"keep not a number", pol + `  mask {
    columns = ["a"]
    using   = "partial"
    keep    = "four"
  }
}`, "Incorrect attribute value type", 6, 15},
		{"keep fractional", pol + `  mask {
    columns = ["a"]
    using   = "partial"
    keep    = 2.5
  }
}`, "Invalid number", 6, 15},
		{"replacement without redact", pol + `  mask {
    columns     = ["a"]
    using       = "partial"
    replacement = "x"
  }
}`, "Unused argument", 6, 5},
		{"replacement not a string", pol + `  mask {
    columns     = ["a"]
    replacement = ["x"]
  }
}`, "Incorrect attribute value type", 5, 19},
		{"replacement with NUL", pol + `  mask {
    columns     = ["a"]
    replacement = "a\u0000b"
  }
}`, "Invalid replacement", 5, 19},
		{"replacement too long", pol + `  mask {
    columns     = ["a"]
    replacement = "` + strings.Repeat("x", 300) + `"
  }
}`, "Invalid replacement", 5, 19},
		{"column pattern with four parts", pol + `  mask {
    columns = ["users.email", "db.public.users.email"]
  }
}`, "Invalid column pattern", 4, 31},
		{"column pattern with an empty part", pol + `  mask {
    columns = ["users..email"]
  }
}`, "Invalid column pattern", 4, 16},
		{"unknown detector", pol + `  mask {
    detect = ["email", "credit_card"]
  }
}`, "Unknown detector", 4, 24},
		{"unknown custom detector", `detector "employee_id" { pattern = "EMP-[0-9]+" }
` + pol + `  mask {
    detect = ["employe_id"]
  }
}`, "Unknown detector", 5, 15},
		{"detector bad regex", `detector "x" {
  pattern = "a(b"
}`, "Invalid regular expression", 2, 13},
		{"detector perl syntax", `detector "x" {
  pattern = "(?<=a)b"
}`, "Invalid regular expression", 2, 13},
		{"detector matches empty", `detector "x" {
  pattern = "[0-9]*"
}`, "Pattern matches empty text", 2, 13},
		{"detector without pattern", `detector "x" {
}`, "Missing required argument", 1, 14},
		{"detector pattern not a string", `detector "x" {
  pattern = 5
}`, "Incorrect attribute value type", 2, 13},
		{"detector shadows built-in", `detector "email" {
  pattern = "x+"
}`, "Built-in detector name", 1, 10},
		{"detector bad name", `detector "my detector" {
  pattern = "x+"
}`, "Invalid detector name", 1, 10},
		{"duplicate detector", `detector "x" {
  pattern = "x+"
}
detector "x" {
  pattern = "y+"
}`, "Duplicate detector name", 4, 10},
		{"detector unknown argument", `detector "x" {
  pattern = "x+"
  using   = "hash"
}`, "Unsupported argument", 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"t.hcl": []byte(testTargets), "x.hcl": []byte(tt.src)})
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			if len(diags.Errs()) != 1 {
				t.Errorf("got %d errors, want 1: %v", len(diags.Errs()), diags)
			}
			d := diags[0]
			if d.Summary != tt.summary || d.Subject == nil || d.Subject.Filename != "x.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %v at %v, want %q at x.hcl:%d:%d", d, d.Subject, tt.summary, tt.line, tt.col)
			}
		})
	}
}

// TestDetectorInAnotherFile checks that a detector block may be defined
// after, and in another file than, the mask block that uses it.
func TestDetectorInAnotherFile(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": testTargets, "a.hcl": `policy "p" {
  targets = ["db"]
  mask "m" { detect = ["ticket"] }
}`, "z.hcl": `detector "ticket" { pattern = "TCK-[0-9]+" }`})
	if rs.Rule("p/mask/m").Mask.Custom["ticket"] == nil {
		t.Fatal("custom detector not attached to the mask spec")
	}
}
