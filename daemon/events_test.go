package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/events"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

func TestLoadConfigEvents(t *testing.T) {
	c, diags, _ := loadConfig(writeConfig(t, `
cgroup = "runner"
events {
  nats_url = "nats://127.0.0.1:4222"
  vm       = "vm-7"
  max_buffer = "1MiB"
}
`))
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	e := c.Events
	if e == nil || e.URL != "nats://127.0.0.1:4222" || e.Stream != "SLUICE_EVENTS" || e.Prefix != "sluice.events" || e.VM != "vm-7" || e.MaxBuffer != 1<<20 {
		t.Errorf("events settings %+v", e)
	}
	for _, tc := range []struct{ body, want string }{
		{`nats_url = "http://x"`, "Invalid events nats_url"},
		{"nats_url = \"nats://x:4222\"\n  vm = \"a.b\"", "Invalid events vm"},
		{"nats_url = \"nats://x:4222\"\n  subject_prefix = \"a.>\"", "Invalid events subject_prefix"},
		{"nats_url = \"nats://x:4222\"\n  max_buffer = \"1KiB\"", "Invalid events max_buffer"},
	} {
		_, diags, _ := loadConfig(writeConfig(t, "cgroup = \"runner\"\nevents {\n  "+tc.body+"\n}\n"))
		if !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%s: diagnostics %q, want %q", tc.body, diags.Error(), tc.want)
		}
	}
}

// TestEventsTeeAndHolder: a session's start and end and its non-allow
// verdicts are published, allowed statements are not; a hold publishes
// its request and decision, with the text only when commands are
// recorded.
func TestEventsTeeAndHolder(t *testing.T) {
	var got []events.Event
	pub := func(e events.Event) { got = append(got, e) }
	tee := eventsTee(pub, "s1", "pg", nil)
	for _, e := range []record.Event{
		{Type: record.TypeSessionStart, Verdict: "allow"},
		{Type: record.TypeStatement, Verdict: "allow", Text: "SELECT 1"},
		{Type: record.TypeStatement, Verdict: "deny", Text: "DROP TABLE t", Rule: "ci/deny/no-drop"},
		{Type: record.TypeWire, Data: []byte("x")},
		{Type: record.TypeSessionEnd},
	} {
		tee(e)
	}
	var kinds []string
	for _, e := range got {
		kinds = append(kinds, e.Type+"/"+e.Verdict)
	}
	if strings.Join(kinds, " ") != "session_start/allow statement/deny session_end/" || got[1].Session != "s1" || got[1].Target != "pg" {
		t.Errorf("published %v: %+v", kinds, got)
	}

	for _, withText := range []bool{true, false} {
		got = nil
		h := eventsHolder(pub, "s1", "pg", withText, func(ctx context.Context, h enforcer.HoldRequest) enforcer.HoldOutcome {
			h.Notify("req-1", "held")
			return enforcer.HoldOutcome{Approved: true, Reason: "approved by alice"}
		})
		rule := &ruleset.Rule{ID: "ci/hold/copy"}
		out := h(context.Background(), enforcer.HoldRequest{Command: &enforcer.Command{Text: "COPY t TO STDOUT"}, Stage: "before",
			Verdict: enforcer.Verdict{Decision: ruleset.Decision{Rule: rule, Reason: "copy out"}}})
		if !out.Approved || len(got) != 2 || got[0].Type != "hold" || got[0].Fields["request"] != "req-1" || got[1].Type != "hold_decision" || got[1].Verdict != "allow" || got[1].Fields["request"] != "req-1" {
			t.Fatalf("hold events %+v", got)
		}
		if (got[0].Text != "") != withText {
			t.Errorf("withText %v: hold text %q", withText, got[0].Text)
		}
	}
}
