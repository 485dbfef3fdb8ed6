package decoder

import (
	"slices"

	"github.com/sluicehq/sluice/ruleset"
)

// KindEmpty is the kind of text with no statement in it, such as ";".
const KindEmpty = "empty"

// kindRank orders SQL statement kinds by how much harm they can do; a kind
// not listed ranks below every listed one but KindEmpty's 0 does not
// apply to it (see Danger).
var kindRank = map[string]int{
	"drop": 100, "truncate": 95, "delete": 90, "update": 85, "merge": 84,
	"alter": 80, "grant": 75, "revoke": 74, "do": 70, "copy_out": 65,
	"call": 60, "execute": 55, "create": 50, "copy_in": 45, "insert": 40,
	"lock": 35, "vacuum": 30, "other": 25, "select": 20, "explain": 15,
	"set": 10, "show": 5, "transaction": 1, KindEmpty: 0,
}

// Danger scores a SQL statement for MergeStatements: its kind's rank
// (drop > truncate > delete > update > merge > alter > grant > revoke > do
// > copy_out > call > execute > create > copy_in > insert > lock > vacuum
// > other > select > explain > set > show > transaction > empty), doubled,
// plus one for an UPDATE or DELETE without WHERE, so that one outranks one
// with. A kind the ranking does not know scores as other: a classifier's
// new kind must not hide behind a harmless neighbour.
func Danger(s ruleset.Statement) int {
	r, ok := kindRank[s.Kind]
	if !ok {
		r = kindRank["other"]
	}
	d := r * 2
	if (s.Kind == "update" || s.Kind == "delete") && !s.HasWhere {
		d++
	}
	return d
}

// MergeStatements folds the statements of one command's text (several SQL
// statements sent at once) into one Statement for a ruleset decision, the
// same for every SQL protocol: kind, has_where and has_limit come from the
// most dangerous statement (Danger; the first of equals), tables,
// functions and flags are the sorted union, and Text is text. One
// statement is returned as it is, with Text set. The result's slices are
// new unless there is a single part, whose slices it shares.
func MergeStatements(parts []ruleset.Statement, text string) ruleset.Statement {
	if len(parts) == 1 {
		st := parts[0]
		st.Text = text
		return st
	}
	var out ruleset.Statement
	for i, p := range parts {
		if i == 0 || Danger(p) > Danger(out) {
			out.Kind, out.HasWhere, out.HasLimit = p.Kind, p.HasWhere, p.HasLimit
		}
		out.Tables = append(out.Tables, p.Tables...)
		out.Functions = append(out.Functions, p.Functions...)
		out.Flags = append(out.Flags, p.Flags...)
	}
	out.Tables, out.Functions, out.Flags = SortedSet(out.Tables), SortedSet(out.Functions), SortedSet(out.Flags)
	out.Text = text
	return out
}

// SortedSet sorts s in place and removes duplicates; nil stays nil.
func SortedSet(s []string) []string {
	slices.Sort(s)
	return slices.Clip(slices.Compact(s))
}
