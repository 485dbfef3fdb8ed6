package decoder

import (
	"errors"
	"testing"

	"github.com/sluicehq/sluice/enforcer/mask"
)

// wireCol is a fake protocol's description of a result column: its
// origin by number, as PostgreSQL's table OID and attribute number.
type wireCol struct {
	table, attnum int
	name          string
}

// TestPlans: a plan is reused (fresh) for the next result with the same
// masker, monitor mode and columns, and named anew otherwise; an origin
// that cannot be named is an error and keeps no plan.
func TestPlans(t *testing.T) {
	masks := mask.NewCache(make([]byte, 32))
	d := Decider{Session: newSession(t, nil), Masks: masks}
	c := command("select")
	d.Decide(c)
	if c.Masker == nil {
		t.Fatal("no masker")
	}
	named := 0
	var p Plans[wireCol]
	p.Origins = func(c *Command, cols []wireCol) ([]mask.Column, error) {
		named++
		out := make([]mask.Column, len(cols))
		for i, col := range cols {
			if col.table == 99 {
				return nil, errors.New("unknown table")
			}
			out[i] = mask.Column{Table: "users", Name: col.name, Type: mask.OIDText}
		}
		return out, nil
	}
	users := []wireCol{{1, 1, "id"}, {1, 2, "email"}}
	first, err := p.Plan(c, users)
	if err != nil {
		t.Fatal(err)
	}
	if _, masked := first.Masked(1); !masked {
		t.Fatal("users.email is not masked")
	}
	v, _, _ := first.Apply(1, []byte("a@b.example"), nil)
	if string(v) == "a@b.example" {
		t.Fatal("users.email passed unmasked")
	}

	again, err := p.Plan(c, []wireCol{{1, 1, "id"}, {1, 2, "email"}})
	if err != nil || again == first || named != 1 {
		t.Fatalf("same columns: plan %p (first %p), named %d times, %v; want a fresh copy, named once", again, first, named, err)
	}
	if _, masked := again.Masked(1); !masked || len(again.Counts()) != 0 {
		t.Errorf("the reused plan does not mask users.email, or its counts did not start afresh: %v", again.Counts())
	}

	other := command("select")
	d.Decide(other)
	other.Verdict.Decision.Monitor = true
	if dry, err := p.Plan(other, users); err != nil || !dry.DryRun || named != 2 {
		t.Errorf("monitor mode: dry %v, named %d, %v; want a dry plan named anew", dry != nil && dry.DryRun, named, err)
	}
	if _, err := p.Plan(c, []wireCol{{1, 2, "email"}}); err != nil || named != 3 {
		t.Errorf("other columns: named %d, %v; want named anew", named, err)
	}
	if pl, err := p.Plan(c, []wireCol{{99, 1, "x"}}); err == nil || pl != nil {
		t.Fatalf("an origin that cannot be named: plan %v, error %v", pl, err)
	}
	if _, err := p.Plan(c, []wireCol{{99, 1, "x"}}); err == nil || named != 5 {
		t.Errorf("a failed naming was kept: named %d, %v", named, err)
	}

	// Origins named from the statement (ByStatement) are named for each
	// result, and such a plan is not kept for the next one.
	p.ByStatement = func(c *Command, cols []wireCol) bool { return cols[0].table == 0 }
	returning := []wireCol{{0, 0, "email"}}
	for i := range 2 {
		if _, err := p.Plan(c, returning); err != nil || named != 6+i {
			t.Errorf("statement-named result %d: named %d times, %v; want named anew each time", i, named, err)
		}
	}
	// The plan kept before them (email alone, above) is still the one
	// reused: statement-named plans never replace it.
	if _, err := p.Plan(c, []wireCol{{1, 2, "email"}}); err != nil || named != 7 {
		t.Errorf("after statement-named results: named %d, %v; want the kept plan reused", named, err)
	}
}
