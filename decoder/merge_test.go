package decoder

import (
	"reflect"
	"testing"

	"github.com/sluicehq/sluice/ruleset"
)

func TestMergeStatements(t *testing.T) {
	sel := ruleset.Statement{Kind: "select", Tables: []string{"b", "a"}, HasLimit: true, Text: "SELECT"}
	delWhere := ruleset.Statement{Kind: "delete", Tables: []string{"a"}, HasWhere: true, Flags: []string{"x"}}
	delAll := ruleset.Statement{Kind: "delete", Tables: []string{"c"}, Functions: []string{"f"}, Flags: []string{"x", "w"}}
	tests := []struct {
		name  string
		parts []ruleset.Statement
		want  ruleset.Statement
	}{
		{"one part is kept as it is", []ruleset.Statement{sel},
			ruleset.Statement{Kind: "select", Tables: []string{"b", "a"}, HasLimit: true, Text: "t"}},
		{"most dangerous wins, sets unioned", []ruleset.Statement{sel, delWhere},
			ruleset.Statement{Kind: "delete", Tables: []string{"a", "b"}, HasWhere: true, Flags: []string{"x"}, Text: "t"}},
		{"without where beats with", []ruleset.Statement{delWhere, delAll, sel},
			ruleset.Statement{Kind: "delete", Tables: []string{"a", "b", "c"}, Functions: []string{"f"}, Flags: []string{"w", "x"}, Text: "t"}},
		{"first of equals", []ruleset.Statement{delAll, {Kind: "delete", HasLimit: true}},
			ruleset.Statement{Kind: "delete", Tables: []string{"c"}, Functions: []string{"f"}, Flags: []string{"w", "x"}, Text: "t"}},
		{"empty loses to anything", []ruleset.Statement{{Kind: KindEmpty}, {Kind: "transaction"}},
			ruleset.Statement{Kind: "transaction", Text: "t"}},
		{"an unknown kind ranks as other", []ruleset.Statement{{Kind: "select"}, {Kind: "brand_new"}, {Kind: "other"}},
			ruleset.Statement{Kind: "brand_new", Text: "t"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MergeStatements(tt.parts, "t"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("MergeStatements\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestDangerOrder pins the ranking every SQL protocol merges by.
func TestDangerOrder(t *testing.T) {
	order := []string{"drop", "truncate", "delete", "update", "merge", "alter", "grant", "revoke", "do",
		"copy_out", "call", "execute", "create", "copy_in", "insert", "lock", "vacuum", "other", "select",
		"explain", "set", "show", "transaction", KindEmpty}
	for i := 1; i < len(order); i++ {
		a, b := ruleset.Statement{Kind: order[i-1], HasWhere: true}, ruleset.Statement{Kind: order[i], HasWhere: true}
		if Danger(a) <= Danger(b) {
			t.Errorf("Danger(%s) = %d, not above Danger(%s) = %d", a.Kind, Danger(a), b.Kind, Danger(b))
		}
	}
	if Danger(ruleset.Statement{Kind: "update"}) <= Danger(ruleset.Statement{Kind: "update", HasWhere: true}) {
		t.Error("an UPDATE without WHERE does not outrank one with")
	}
	if Danger(ruleset.Statement{Kind: "update"}) >= Danger(ruleset.Statement{Kind: "delete", HasWhere: true}) {
		t.Error("an UPDATE without WHERE outranks a DELETE")
	}
}
