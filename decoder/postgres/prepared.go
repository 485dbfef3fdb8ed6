package postgres

import (
	"encoding/json"
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
type sqlPrepared struct {
	m     map[string]ruleset.Statement
	bytes int
}

const (
	maxPrepared      = 1000
	maxPreparedBytes = 16 << 20
)

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
// decided as what it runs. st's slices are not modified.
func (p *sqlPrepared) apply(st ruleset.Statement, text string) ruleset.Statement {
	if !mayPrepare(text) {
		return st
	}
	js, err := pg_query.ParseToJSON(text)
	if err != nil {
		return st // the statement is refused as unparsable anyway
	}
	var tree struct {
		Stmts []struct {
			Stmt map[string]struct {
				Name   string `json:"name"`
				IsAll  bool   `json:"isall"`
				Target string `json:"target"`
			} `json:"stmt"`
		} `json:"stmts"`
	}
	if json.Unmarshal([]byte(js), &tree) != nil {
		return st
	}
	parts, err := ClassifyAll(text)
	if err != nil || len(parts) != len(tree.Stmts) {
		return st
	}
	merged := []ruleset.Statement{st}
	for i, s := range tree.Stmts {
		for typ, n := range s.Stmt {
			switch typ {
			case "PrepareStmt":
				p.set(n.Name, parts[i])
			case "DeallocateStmt":
				if n.IsAll || n.Name == "" {
					p.m, p.bytes = nil, 0
				} else {
					p.del(n.Name)
				}
			case "DiscardStmt":
				if n.Target == "DISCARD_ALL" {
					p.m, p.bytes = nil, 0
				}
			case "ExecuteStmt":
				if prep, ok := p.m[n.Name]; ok {
					merged = append(merged, prep)
				} else {
					merged = append(merged, ruleset.Statement{Kind: "execute", Flags: []string{FlagUnknownPrepared}})
				}
			}
		}
	}
	if len(merged) == 1 {
		return st
	}
	return Merge(merged, st.Text)
}

func (p *sqlPrepared) set(name string, st ruleset.Statement) {
	p.del(name)
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
