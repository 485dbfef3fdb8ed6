package mysql

import (
	"fmt"
	"strings"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
)

// unknownCharset stands for a client character set the proxy cannot name:
// it is taken to be one whose two-byte characters may end in a backslash
// (Dialect.Charset), so a text whose reading would depend on it is
// refused rather than misread.
const unknownCharset = "gbk"

// clientCharset returns the client character set text leaves the session
// in, read with the server's own grammar (TiDB's parser, executable
// comments applied for d): the last SET NAMES, SET CHARACTER SET or write
// to character_set_client it makes. changed is false when it makes none.
// A value that is not a plain name (DEFAULT, an expression, a variable)
// is unknownCharset, and so is any text that does not parse.
func clientCharset(d Dialect, text string) (charset string, changed bool) {
	stmts, err := parseAs(d, text)
	if err != nil {
		return unknownCharset, true
	}
	for _, st := range stmts {
		set, ok := st.(*ast.SetStmt)
		if !ok {
			continue
		}
		for _, v := range set.Variables {
			switch {
			case v.Name == ast.SetNames, v.Name == ast.SetCharset:
			case v.IsSystem && strings.EqualFold(v.Name, "character_set_client"):
			default:
				continue
			}
			charset, changed = nameOf(v.Value), true
		}
	}
	return charset, changed
}

// parseAs parses text as the server of dialect d reads it (executable
// comments applied), for the few commands the relay reads again after
// their classification (a client file's name, a character set). It
// uses a fresh parser rather than the pool's; a panic of the parser is
// an error, as in classifyAll.
func parseAs(d Dialect, text string) (stmts []ast.StmtNode, err error) {
	expanded, _, err := expand(d, text)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			stmts, err = nil, fmt.Errorf("%w: the parser failed: %v", ErrUnsupported, r)
		}
	}()
	p := parser.New()
	p.SetSQLMode(d.sqlMode())
	p.SetMariaDB(d.MariaDB)
	stmts, _, err = p.ParseSQL(expanded)
	return stmts, err
}

// nameOf is the character set an assignment's value names, lower-cased,
// or unknownCharset.
func nameOf(e ast.ExprNode) string {
	switch v := e.(type) {
	case ast.ValueExpr:
		if s := v.GetString(); s != "" {
			return strings.ToLower(s)
		}
	case *ast.ColumnNameExpr:
		return strings.ToLower(v.Name.Name.O)
	}
	return unknownCharset
}
