package decoder

import (
	"slices"

	"github.com/sluicehq/sluice/enforcer/mask"
)

// Plan returns a new masking plan of c's masker for a result with columns
// cols (their origins as mask rules name them: schema, table and column,
// or no table when an expression lost its origin; and the type), dry
// when c's verdict is monitor mode's. c must have a masker.
func (c *Command) Plan(cols []mask.Column) *mask.Plan {
	p := c.Masker.Plan(cols)
	p.DryRun = c.Verdict.Decision.Monitor
	return p
}

// Plans makes the masking plans of one session's results, and reuses the
// last one for the next result with the same masker, the same monitor
// mode and the same columns (a statement run again): the column
// decisions are shared, the counts start afresh (mask.Plan.Fresh). K is
// how the protocol describes a result's column on its wire, comparable,
// and holding everything the column's origin and type are named from (a
// PostgreSQL RowDescription field: table OID, attribute number, type,
// format, name; a MySQL column definition: schema, table, column, type).
// Only a result whose columns have another description is named again.
//
// Plans belongs to the goroutine that reads a session's results; it is
// not safe for concurrent use. It keeps the last plan for the session's
// lifetime.
type Plans[K comparable] struct {
	// Origins names the origins of a result's columns, in order, for c's
	// masker: from the protocol's catalog when the masks go by column
	// (Masker.ByColumn), by output name and type alone when they only
	// detect. An origin that cannot be named is an error, and the result
	// is refused: its values must not pass unmasked. Set it once, before
	// the first Plan; it must not keep cols.
	Origins func(c *Command, cols []K) ([]mask.Column, error)
	// ByStatement, when set, reports whether Origins names some of cols
	// from c's statement rather than from cols alone (a value a statement
	// returns without an origin of its own, named by the table the
	// statement writes). Such a plan holds for c only: it is neither
	// reused nor kept for the next result.
	ByStatement func(c *Command, cols []K) bool

	plan   *mask.Plan
	masker *mask.Masker
	cols   []K
}

// Plan returns the plan for a result of c (which must have a masker)
// whose columns the protocol describes as cols: a fresh copy of the last
// plan when it was made for c's masker, monitor mode and the same cols,
// else a new plan of the origins Origins names (then the last plan). The
// error is Origins', and no plan is made. cols is kept until the next
// plan is made, and must not change meanwhile.
func (p *Plans[K]) Plan(c *Command, cols []K) (*mask.Plan, error) {
	if p.ByStatement != nil && p.ByStatement(c, cols) {
		origins, err := p.Origins(c, cols)
		if err != nil {
			return nil, err
		}
		return c.Plan(origins), nil
	}
	if p.plan != nil && p.masker == c.Masker && p.plan.DryRun == c.Verdict.Decision.Monitor && slices.Equal(p.cols, cols) {
		return p.plan.Fresh(), nil
	}
	origins, err := p.Origins(c, cols)
	if err != nil {
		return nil, err
	}
	plan := c.Plan(origins)
	p.plan, p.masker, p.cols = plan, c.Masker, cols
	return plan, nil
}
