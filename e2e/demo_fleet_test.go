package e2e

import (
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestDemoFleet runs the README's fleet demo (scripts/demo-fleet.sh, what
// `make demo-fleet` runs) with the binaries under test and checks that
// each numbered step shows what the README's Fleets section claims: two
// sluiced daemons ("VMs") sharing one real nats-server and one real
// S3-compatible server (versitygw). Needs root, PostgreSQL and the
// nats-server and versitygw builds (scripts/build-nats.sh,
// scripts/build-s3.sh); it removes everything it made.
func TestDemoFleet(t *testing.T) {
	testenv.RequireRoot(t)
	_, err := testenv.NATSBin()
	testenv.Need(t, err == nil, fmt.Sprint(err))
	_, err = testenv.S3Bin()
	testenv.Need(t, err == nil, fmt.Sprint(err))
	text, steps := runDemo(t, "scripts/demo-fleet.sh", 4*time.Minute)
	want := map[int][]string{
		// Published once, both VMs run that version, pulled from NATS.
		1: {`published version (\d+) `, `(?s)a/sluiced\.sock.*\npulled:\s+version \d+ \(published [^)]+\) from nats://127\.0\.0\.1:\d+/rulesets/ci, applied`,
			`(?s)b/sluiced\.sock.*\npulled:\s+version \d+ \(published [^)]+\) from nats://127\.0\.0\.1:\d+/rulesets/ci, applied`},
		2: {`\n\s+2 \| alan@example\.com\n`, `(?s)a/runner .*DROP TABLE users\nERROR:  sluice: statement denied by rule "ci-jobs/deny/no-ddl"`,
			`(?s)b/runner .*DROP TABLE users\nERROR:  sluice: statement denied by rule "ci-jobs/deny/no-ddl"`},
		// Listed from the bus, refused with the job's own token, approved
		// with the approver's, and the COPY's rows reach the job.
		3: {`\nvm-a\s+h-\w+\s+pending\s+ci-jobs/hold/exports\s+fleet-db\s+psql\[\d+\] uid 65534\s`,
			`job\.token\n[^\n]*h-\w+: refused: token refused: `, `\nh-\w+: approved\n`,
			`(?s)after approval:\n.*\n1\tada@example\.com\n2\talan@example\.com\n`},
		4: {`"vm":"vm-a"[^\n]*"type":"statement"[^\n]*"verdict":"deny"`, `"vm":"vm-b"[^\n]*"type":"statement"[^\n]*"verdict":"deny"`},
		5: {`(?s)a/sluiced\.sock.*last error: bundle version \d+ refused: bundle signature does not verify`,
			`(?s)b/sluiced\.sock.*last error: bundle version \d+ refused: bundle signature does not verify`,
			`(?s)b/runner .*DROP TABLE users\nERROR:  sluice: statement denied by rule "ci-jobs/deny/no-ddl"`},
		6: {`\$ rm -rf \S+/a\n`, `sealed\s+fleet-db\s+127\.0\.0\.2:\d+\s+psql\[\d+\] uid 0\s+\S+\s+\d+\s+1\s+vm vm-a\n`,
			`key\s+vm vm-a's key, endorsed by fleet key [0-9a-f]+`, `=> DROP TABLE users\n\s+\[deny\] rule ci-jobs/deny/no-ddl`,
			`: ok, sealed, \d+ events, signed by key [0-9a-f]+ \(vm vm-a's key, endorsed by fleet key`},
	}
	for n, res := range want {
		s, ok := steps[n]
		if !ok {
			t.Errorf("the demo has no step %d\n%s", n, text)
			continue
		}
		for _, w := range res {
			if !regexp.MustCompile(w).MatchString(s) {
				t.Errorf("demo-fleet step %d does not show %q:\n%s", n, w, s)
			}
		}
	}
	if regexp.MustCompile(`FORGED|ALTERED|altered`).MatchString(steps[6]) {
		t.Errorf("demo-fleet step 6 reports a forged or altered recording:\n%s", steps[6])
	}
}
