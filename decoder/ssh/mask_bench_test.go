package ssh

import (
	"bytes"
	"testing"

	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/ruleset"
)

// BenchmarkLineMasker: what masking an exec's output costs, per byte of
// typical log-like output (80-byte lines, one email every 10 lines), with
// the default ruleset's detectors.
func BenchmarkLineMasker(b *testing.B) {
	rs, diags := ruleset.Parse(map[string][]byte{"r.hcl": []byte(`
target "h" {
  protocol = "ssh"
  address  = ["127.0.0.1:22"]
}
policy "p" {
  targets = ["h"]
  mask "m" {
    detect = ["secret", "jwt", "aws_access_key", "private_key", "card_number", "iban", "ssn", "email", "phone"]
    using  = "redact"
  }
}
`)})
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	d := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "h", Protocol: "ssh"}}).Decide(&ruleset.Statement{Kind: "exec", SSH: &ruleset.SSHRequest{Kind: "exec"}}, ruleset.Result{})
	m, err := mask.NewCache(make([]byte, 32)).Masker(d.Masks)
	if err != nil {
		b.Fatal(err)
	}
	var in bytes.Buffer
	for i := 0; in.Len() < 32<<10; i++ {
		line := "2026-12-04T10:00:00Z build step 42 finished in 1.234s, artefact uploaded ok....\n"
		if i%10 == 0 {
			line = "2026-12-04T10:00:00Z notify ops@example.com that the deploy of build 42 is done\n"
		}
		in.WriteString(line)
	}
	chunk := in.Bytes()
	b.SetBytes(int64(len(chunk)))
	b.ReportAllocs()
	for b.Loop() {
		lm := &lineMasker{text: m.Text}
		lm.write(chunk)
		lm.flush()
	}
}
