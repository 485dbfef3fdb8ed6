package postgres

import (
	"encoding/json"
	"slices"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"

	"github.com/sluicehq/sluice/ruleset"
)

// sqlPrepared remembers what a session's SQL-level PREPAREs prepared, so
// that EXECUTE is decided as the statement it runs: `PREPARE p AS DELETE
// FROM t` then `EXECUTE p` is a DELETE. An EXECUTE of a name the session
// never prepared (or prepared past the bounds) is flagged
// unknown_prepared, which the default ruleset refuses. DEALLOCATE and
// DISCARD ALL forget names. Bounded: maxPrepared names, maxPreparedBytes
// of text. The client goroutine's alone.
//
// The map is updated when a statement is decided, not when the server
// ran it, so it over-approximates what the server holds: a PREPARE of a
// name already held (which the server refuses if it has it) is merged
// with what the name held, and once a PREPARE ran inside a body (a DO
// block's or function's, whose names Sluice cannot follow) every EXECUTE
// is unknown_prepared until DEALLOCATE ALL or DISCARD ALL.
type sqlPrepared struct {
	m       map[string]ruleset.Statement
	bytes   int
	blinded bool // a body may have prepared names
}

const (
	maxPrepared      = 1000
	maxPreparedBytes = 16 << 20
)

// mayApply is apply's pre-filter, on the classification so that an
// ordinary statement costs a look at its flags: every PREPARE carries flag
// prepare and every EXECUTE unknown_prepared, whatever else is in the
// text; DEALLOCATE and DISCARD are kind other. A DEALLOCATE or DISCARD
// merged under a more dangerous kind is missed, which only leaves the map
// holding names the server forgot: their EXECUTE fails at the server, and
// a new PREPARE of one is merged with the old.
func mayApply(st ruleset.Statement, text string) bool {
	for _, f := range st.Flags {
		if f == FlagPrepare || f == FlagUnknownPrepared {
			return true
		}
	}
	return st.Kind == "other" && mayPrepare(text)
}

// mayPrepare is a pre-filter: text that holds none of these words holds no
// PREPARE, EXECUTE, DEALLOCATE or DISCARD (keywords are never spelt any
// other way), so the parse below is skipped for ordinary statements.
func mayPrepare(text string) bool {
	for _, w := range []string{"prepare", "execute", "deallocate", "discard"} {
		if containsFold(text, w) {
			return true
		}
	}
	return false
}

// containsFold reports whether s contains the lower-case ASCII word sub in
// any case. It jumps between occurrences of sub's first letter with
// IndexByte, so a long text without it costs one vectorised scan.
func containsFold(s, sub string) bool {
	lo, up := sub[0], sub[0]-('a'-'A')
	for len(s) >= len(sub) {
		i, j := strings.IndexByte(s, lo), strings.IndexByte(s, up)
		if i < 0 || (j >= 0 && j < i) {
			i = j
		}
		if i < 0 || len(s)-i < len(sub) {
			return false
		}
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
		s = s[i+1:]
	}
	return false
}

// apply updates the session's names from text's PREPARE, DEALLOCATE and
// DISCARD statements, in order, and returns st with every EXECUTE in text
// decided as what it runs: a top-level EXECUTE takes the prepared
// statement's classification in its place (so EXECUTE of a prepared
// SELECT is a select), an EXECUTE inside another statement (EXPLAIN
// EXECUTE, CREATE TABLE AS EXECUTE) is merged into it. st comes from the
// shared cache: its slices are never modified, and a substituted result is
// a new Statement.
func (p *sqlPrepared) apply(st ruleset.Statement, text string) ruleset.Statement {
	if !mayApply(st, text) {
		return st
	}
	js, err := pg_query.ParseToJSON(text)
	if err != nil {
		return st // the statement is refused as unparsable anyway
	}
	var tree struct {
		Stmts []struct {
			Stmt map[string]json.RawMessage `json:"stmt"`
		} `json:"stmts"`
	}
	if json.Unmarshal([]byte(js), &tree) != nil {
		return st
	}
	parts, err := ClassifyAll(text)
	if err != nil || len(parts) != len(tree.Stmts) {
		return st
	}
	executes := false
	for i, s := range tree.Stmts {
		for typ, raw := range s.Stmt {
			if typ != "PrepareStmt" && slices.Contains(parts[i].Flags, FlagPrepare) {
				p.blinded = true
			}
			var n struct {
				Name   string `json:"name"`
				IsAll  bool   `json:"isall"`
				Target string `json:"target"`
			}
			switch typ {
			case "PrepareStmt":
				if json.Unmarshal(raw, &n) == nil {
					p.set(n.Name, parts[i])
				}
			case "DeallocateStmt":
				if json.Unmarshal(raw, &n) == nil {
					if n.IsAll || n.Name == "" {
						p.m, p.bytes, p.blinded = nil, 0, false
					} else {
						p.del(n.Name)
					}
				}
			case "DiscardStmt":
				if json.Unmarshal(raw, &n) == nil && n.Target == "DISCARD_ALL" {
					p.m, p.bytes, p.blinded = nil, 0, false
				}
			case "ExecuteStmt":
				if json.Unmarshal(raw, &n) == nil {
					parts[i] = p.lookup(n.Name)
					executes = true
				}
			default:
				// EXPLAIN [ANALYZE] EXECUTE p, CREATE TABLE x AS EXECUTE p.
				var v any
				if !strings.Contains(string(raw), `"ExecuteStmt"`) || json.Unmarshal(raw, &v) != nil {
					continue
				}
				outer := parts[i]
				outer.Flags = slices.DeleteFunc(slices.Clone(outer.Flags), func(f string) bool { return f == FlagUnknownPrepared })
				merged := []ruleset.Statement{outer}
				for _, name := range executeNames(v, nil) {
					merged = append(merged, p.lookup(name))
				}
				if len(merged) > 1 {
					parts[i] = Merge(merged, parts[i].Text)
					executes = true
				}
			}
		}
	}
	if !executes {
		return st
	}
	out := Merge(parts, st.Text)
	if len(parts) == 1 {
		// Merge of one returns it as is: its slices are the map's.
		out.Tables, out.Functions, out.Flags = slices.Clone(out.Tables), slices.Clone(out.Functions), slices.Clone(out.Flags)
	}
	return out
}

// lookup returns what name was prepared as, or an execute flagged
// unknown_prepared.
func (p *sqlPrepared) lookup(name string) ruleset.Statement {
	if prep, ok := p.m[name]; ok && !p.blinded {
		return prep
	}
	return ruleset.Statement{Kind: "execute", Flags: []string{FlagUnknownPrepared}}
}

// executeNames appends the names of the ExecuteStmt nodes under v.
func executeNames(v any, names []string) []string {
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			names = executeNames(e, names)
		}
	case map[string]any:
		for k, e := range v {
			if k == "ExecuteStmt" {
				if m, ok := e.(map[string]any); ok {
					name, _ := m["name"].(string)
					names = append(names, name)
					continue
				}
			}
			names = executeNames(e, names)
		}
	}
	return names
}

// set remembers that name was prepared as st; the PREPARE itself (flag
// prepare) is not part of what EXECUTE runs.
func (p *sqlPrepared) set(name string, st ruleset.Statement) {
	st.Flags = slices.DeleteFunc(slices.Clone(st.Flags), func(f string) bool { return f == FlagPrepare })
	if old, ok := p.m[name]; ok {
		// The server keeps the old one if it has it: either may run.
		st = Merge([]ruleset.Statement{old, st}, old.Text+"; "+st.Text)
	}
	p.del(name)
	if len(st.Flags) == 0 {
		st.Flags = nil
	}
	if len(p.m) >= maxPrepared || p.bytes+len(st.Text) > maxPreparedBytes {
		return // EXECUTE of it is then unknown_prepared: refused
	}
	if p.m == nil {
		p.m = map[string]ruleset.Statement{}
	}
	p.m[name] = st
	p.bytes += len(st.Text)
}

func (p *sqlPrepared) del(name string) {
	if old, ok := p.m[name]; ok {
		p.bytes -= len(old.Text)
		delete(p.m, name)
	}
}
