package ruleset

import (
	"strings"
	"testing"
)

func TestUndecodedAttribute(t *testing.T) {
	rs := mustParse(t, map[string]string{"t.hcl": `
target "my" {
  protocol = "mysql"
  address  = ["*:3306"]
}
target "git" {
  protocol  = "ssh"
  address   = ["*:22"]
  undecoded = "relay"
}
target "kube" {
  protocol  = "k8s"
  address   = ["*:6443"]
  undecoded = "refuse"
}
target "raw" {
  protocol = "tcp"
  address  = ["*:9000"]
}
`})
	tests := []struct {
		target, want string
		set          bool
		line         int
	}{
		{"my", UndecodedRefuse, false, 0},
		{"git", UndecodedRelay, true, 9},
		{"kube", UndecodedRefuse, true, 14},
		{"raw", "", false, 0},
	}
	for _, tt := range tests {
		tg := rs.Target(tt.target)
		if tg.Undecoded != tt.want {
			t.Errorf("%s: Undecoded = %q, want %q", tt.target, tg.Undecoded, tt.want)
		}
		if (tg.UndecodedRange != nil) != tt.set {
			t.Errorf("%s: UndecodedRange = %v, want set %t", tt.target, tg.UndecodedRange, tt.set)
		} else if tt.set && (tg.UndecodedRange.Filename != "t.hcl" || tg.UndecodedRange.Start.Line != tt.line || tg.UndecodedRange.Start.Column != 15) {
			t.Errorf("%s: UndecodedRange = %v, want t.hcl:%d:15", tt.target, tg.UndecodedRange, tt.line)
		}
	}
}

func TestUndecodedDiagnostics(t *testing.T) {
	tests := []struct {
		name, src, summary, detail string
		line, col                  int
	}{
		{"unknown mode", `target "m" {
  protocol  = "mysql"
  address   = ["*:3306"]
  undecoded = "rely"
}`, "Invalid value for undecoded", `undecoded must be one of "relay", "refuse"; got "rely". Did you mean "relay"?`, 4, 15},
		{"allow is not a mode", `target "m" {
  protocol  = "mysql"
  address   = ["*:3306"]
  undecoded = "allow"
}`, "Invalid value for undecoded", `undecoded must be one of "relay", "refuse"; got "allow".`, 4, 15},
		{"not a string", `target "m" {
  protocol  = "ssh"
  address   = ["*:22"]
  undecoded = true
}`, "Incorrect attribute value type", "undecoded must be a string; got bool.", 4, 15},
		{"on a tcp target", `target "m" {
  protocol  = "tcp"
  address   = ["*:9000"]
  undecoded = "relay"
}`, "undecoded not supported", "tcp targets are always relayed opaquely", 4, 15},
		{"null", `target "m" {
  protocol  = "k8s"
  address   = ["*:6443"]
  undecoded = null
}`, "Missing value", "undecoded cannot be null", 4, 15},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := Parse(map[string][]byte{"x.hcl": []byte(tt.src)})
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			if len(diags) != 1 {
				t.Fatalf("got %d diagnostics, want 1: %v", len(diags), diags)
			}
			d := diags[0]
			if d.Summary != tt.summary || !strings.HasPrefix(d.Detail, tt.detail) || d.Subject == nil || d.Subject.Filename != "x.hcl" ||
				d.Subject.Start.Line != tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("got %q %q at %v, want %q %q at x.hcl:%d:%d", d.Summary, d.Detail, d.Subject, tt.summary, tt.detail, tt.line, tt.col)
			}
		})
	}
}

// TestDefaultRulesetRelaysUndecoded: the embedded default must never
// break a pipeline, so every target of a protocol that may lack a decoder
// relays. postgres and mysql decode in every build.
func TestDefaultRulesetRelaysUndecoded(t *testing.T) {
	rs := Default()
	want := map[string]string{"ssh": ProtoSSH, "kubernetes": ProtoK8s}
	for name, proto := range want {
		tg := rs.Target(name)
		if tg == nil || tg.Protocol != proto {
			t.Fatalf("default ruleset target %s: %+v, want protocol %s", name, tg, proto)
		}
		if tg.Undecoded != UndecodedRelay || tg.UndecodedRange == nil || tg.UndecodedRange.Filename != DefaultFileName {
			t.Errorf("default ruleset target %s: undecoded %q set at %v, want %q set in %s", name, tg.Undecoded, tg.UndecodedRange, UndecodedRelay, DefaultFileName)
		}
	}
	for _, tg := range rs.Targets() {
		if tg.Protocol != ProtoPostgres && tg.Protocol != ProtoMySQL && tg.Protocol != ProtoTCP && tg.Undecoded != UndecodedRelay {
			t.Errorf("default ruleset target %s (%s) would refuse its flows without a decoder", tg.Name, tg.Protocol)
		}
	}
}
