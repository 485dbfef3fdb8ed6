package mysql

import (
	"database/sql"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/sluicehq/sluice/internal/testenv"
)

// TestExpand pins the text the parser gets: comments and the markers of
// comments that run become a space, everything else is kept byte for
// byte.
func TestExpand(t *testing.T) {
	nobs := Dialect{MariaDB: true, Version: 101100, NoBackslashEscapes: true}
	tests := []struct {
		d       Dialect
		in, out string
		hints   bool
	}{
		{mariaDB, "SELECT 1", "SELECT 1", false},
		{mariaDB, "SELECT 1 /*M! , 2 */", "SELECT 1   , 2  ", false},
		{mySQL, "SELECT 1 /*M! , 2 */", "SELECT 1  ", false},
		{mariaDB, "SELECT 1/*!100000,2*/", "SELECT 1 ,2 ", false},
		{mariaDB, "SELECT 1/*!110000,2*/", "SELECT 1 ", false},
		{mariaDB, "SELECT /*!1234 + 1*/", "SELECT  1234 + 1 ", false},
		{mariaDB, "SELECT /*!1000001*/", "SELECT  1 ", false},
		{mariaDB, "SELECT 1 -- x\n, 2 # y\n", "SELECT 1  \n, 2  \n", false},
		{mariaDB, "SELECT 1 --", "SELECT 1  ", false},
		{mariaDB, "SELECT 1 --2", "SELECT 1 --2", false},
		{mariaDB, "SELECT '/*!x*/', \"#\", `--`", "SELECT '/*!x*/', \"#\", `--`", false},
		{mariaDB, `SELECT 'a\'/*!x*/'`, `SELECT 'a\'/*!x*/'`, false},
		{nobs, `SELECT 'a\'/*!,'x'*/`, `SELECT 'a\' ,'x' `, false},
		{mariaDB, "SELECT /*+ BKA(t) */ 1", "SELECT   1", false},
		{mySQL, "SELECT /*+ BKA(t) */ 1", "SELECT /*+ BKA(t) */ 1", true},
		{mariaDB, "LOAD DATA /*!*/ LOCAL INFILE 'x'", "LOAD DATA    LOCAL INFILE 'x'", false},
		{mariaDB, "SELECT 1 /*!99999 '*/ , 2", "SELECT 1   , 2", false},
	}
	for _, tt := range tests {
		out, hints, err := expand(tt.d, tt.in)
		if err != nil {
			t.Errorf("expand(%+v, %q): %v", tt.d, tt.in, err)
			continue
		}
		if out != tt.out || hints != tt.hints {
			t.Errorf("expand(%+v, %q) = %q, hints %t; want %q, %t", tt.d, tt.in, out, hints, tt.out, tt.hints)
		}
	}
}

// TestExpandRefuses: what cannot be lexed with certainty is an error
// wrapping ErrUncertainLexing.
func TestExpandRefuses(t *testing.T) {
	for _, tt := range []struct {
		d  Dialect
		in string
	}{
		{mariaDB, "SELECT 'x"},
		{mariaDB, "SELECT \"x"},
		{mariaDB, "SELECT `x"},
		{mariaDB, `SELECT 'x\'`},
		{mariaDB, `SELECT "a\"b"`},
		{Dialect{MariaDB: true, Version: 101100, ANSIQuotes: true}, `SELECT "a\b"`},
		{mariaDB, "SELECT 1 /* x"},
		{mariaDB, "SELECT 1 /*! x"},
		{mariaDB, "SELECT 1 /*!110000 x"},
		{mariaDB, "SELECT 1 /*!110000 /* */ */"},
		{mariaDB, "SELECT 1/*M!101120/ /*/*+'#'"}, // verified: the server opens a comment at "/*/"
		{mySQL, "SELECT /*+ a /*/ 1"},
		{mariaDB, "SELECT 1 /*! /* */ */"},
		{mariaDB, "SELECT 1 /*! # */"},
		{mariaDB, "SELECT 1 /*! -- */"},
		{mariaDB, "SELECT 1 /*! ; */"},
		{mariaDB, "SELECT 1 --/**/1"},
		{mariaDB, "SELECT 1 --\x85"},
		{mariaDB, "SELECT 1\x00"},
		{mariaDB, "SELECT /*+ a('x') */ 1"},
		{mariaDB, "SELECT /*+ a(/*) */ 1"},
		{mariaDB, "SELECT /*+ a"},
		{mySQL, "SELECT /*!100000 1 */"},
		{Dialect{Version: 0}, "SELECT /*!50000 1 */"},
		{Dialect{MariaDB: true, Version: 101100, Charset: "sjis"}, "SELECT '\x95\\'"},
		{Dialect{MariaDB: true, Version: 101100, Charset: "big5"}, "SELECT `\xa4`"},
	} {
		if out, _, err := expand(tt.d, tt.in); !errors.Is(err, ErrUncertainLexing) {
			t.Errorf("expand(%+v, %q) = %q, %v; want ErrUncertainLexing", tt.d, tt.in, out, err)
		}
	}
}

// expandCases are texts whose expansion TestExpandAgainstMariaDB checks
// against the server; each is run under sql_mode ”, NO_BACKSLASH_ESCAPES
// and ANSI_QUOTES. A case the expansion refuses is only logged.
var expandCases = []string{
	"SELECT 1 /*M! , 2 */",
	"SELECT 1 /*m! , 2 */",
	"SELECT 1 /*! , 2 */",
	"SELECT 1/*!,2*/",
	"SELECT 1 /*!*/",
	"SELECT 1 /*!100000 , 2 */",
	"SELECT 1 /*!110000 , 2 */",
	"SELECT 1 /*M!101119 , 2 */",
	"SELECT 1 /*M!101120 , 2 */",
	"SELECT 1 /*!50700 , 2 */",
	"SELECT 1 /*!80000 , 2 */",
	"SELECT 1 /*!50699 , 2 */",
	"SELECT 1 /*M!50700 , 2 */",
	"SELECT 1 /*M!100000 , 2 */",
	"SELECT /*!1234 + 1, 2 */",
	"SELECT /*!1000001, 2 */",
	"SELECT 1 /*!99999 '*/ , 2 -- '",
	"SELECT 'a\\' /*M! , 2 */ -- '",
	"SELECT 'a\\'' /*M! , 2 */ -- '",
	"SELECT \"a\\\" /*M! , 2 */ -- \"",
	"SELECT 'it''s /*M! , 2 */'",
	"SELECT 1 /*! , '*/' , 2 */",
	"SELECT 2 --- , 3\n- 4",
	"SELECT 1 --2",
	"SELECT 1 --\x01, 2",
	"SELECT 1 --\t, 2",
	"SELECT 1 --",
	"SELECT 1 # , 2\n, 3",
	"SELECT /*+ MAX_EXECUTION_TIME(1000) */ 1",
	"SELECT 1 /*T![auto_rand] , 2 */",
	"SELECT 1 /*!, 2 */ /*M!, 3*/ /*!50000, 4 */",
	// Refused; what the server does is in the comment.
	"SELECT 1 /*!99999 /* x */ , 2 */", // 1: one nested comment is skipped with it
	"SELECT 1 /*! /* x */ , 2 */",      // 1, 2
	"SELECT 1 /*! # */ , 2 */\n*/",     // 1: the # comment eats the first */
	"SELECT 1 --/**/1, 2",              // 2, 2: two minus signs
	"SELECT 1 --\xc2\xa0, 2",           // an error: not a comment
	"SELECT 1/*M!101120/ /*/*+'#'",     // an error: "/*/" opens a nested comment
}

// TestExpandAgainstMariaDB checks the expansion against a real MariaDB
// 10.11: for every text the expansion accepts, the server returns the
// same for the text as for its expansion (which has no comment left), or
// an error for both. Besides expandCases it tries random texts made of
// SELECT 1 and pieces that move where strings and comments end. (First
// run by hand on MariaDB 10.11.19: 15000 random texts per sql_mode, no
// difference; it found "/*/", now refused.)
func TestExpandAgainstMariaDB(t *testing.T) {
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{NoTLS: true})
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Passwd = testenv.MariaDBAppUser, testenv.MariaDBAppPassword
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", my.HostPort(), testenv.MariaDBDatabase
	cfg.Timeout = 10 * time.Second
	conn, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1) // one session, whose sql_mode each round sets
	version := serverVersion(t, my.Version)

	pieces := []string{" ", "1", ",2", "'", "\"", "`", "\\", "/*", "*/", "/*!", "/*M!", "/*m!", "/*!50700", "/*!50699",
		"/*!100000", "/*!110000", "/*M!101119", "/*M!999999", "/*!1", "/*!1000001", "--", "-- ", "--\t", "--\x01", "#",
		"\n", "-", "*", "/", "a", "+", "''", "\\'", "\\\"", "/*+", "x", "'a\\'b'", "'*/'", "'/*'", "'--'", "'#'",
		"\"x\"", "\"*/\"", "`*/`", "'\\\\'", "'a''b'", "`a``b`", "\"a\"\"b\"", " /*!, 3*/", " /*M!, 3*/", " /* c */"}
	r := rand.New(rand.NewSource(1))
	texts := slicesClone(expandCases)
	n := 3000
	if testing.Short() {
		n = 0
	}
	for i := 0; i < n; i++ {
		var b strings.Builder
		b.WriteString("SELECT 1")
		for k := r.Intn(8) + 1; k > 0; k-- {
			b.WriteString(pieces[r.Intn(len(pieces))])
		}
		texts = append(texts, b.String())
	}
	for _, m := range []struct {
		mode string
		d    Dialect
	}{
		{"", Dialect{MariaDB: true, Version: version}},
		{"NO_BACKSLASH_ESCAPES", Dialect{MariaDB: true, Version: version, NoBackslashEscapes: true}},
		{"ANSI_QUOTES", Dialect{MariaDB: true, Version: version, ANSIQuotes: true}},
	} {
		if _, err := db.Exec("SET SESSION sql_mode = '" + m.mode + "'"); err != nil {
			t.Fatal(err)
		}
		accepted := 0
		for i, q := range texts {
			exp, _, err := expand(m.d, q)
			if err != nil {
				if i < len(expandCases) {
					t.Logf("[%s] refused %q (server: %s): %v", m.mode, q, serverResult(db, q), err)
				}
				continue
			}
			accepted++
			if raw, got := serverResult(db, q), serverResult(db, exp); raw != got {
				t.Errorf("[%s] %q: the server returns %s, for the expansion %q %s", m.mode, q, raw, exp, got)
			}
		}
		t.Logf("[%s] %d of %d texts accepted, each the same on the server as its expansion", m.mode, accepted, len(texts))
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }

// serverVersion turns "10.11.19-MariaDB-0+deb12u1" into 101119.
func serverVersion(t *testing.T, v string) int {
	parts := strings.SplitN(strings.SplitN(v, "-", 2)[0], ".", 3)
	if len(parts) != 3 {
		t.Fatalf("server version %q", v)
	}
	n := 0
	for _, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil {
			t.Fatalf("server version %q", v)
		}
		n = n*100 + x
	}
	return n
}

// serverResult runs q and describes its result: the column count and
// every value, or ERR.
func serverResult(db *sql.DB, q string) string {
	rows, err := db.Query(q)
	if err != nil {
		return "ERR"
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "ERR"
	}
	var out []string
	for rows.Next() {
		vals := make([]sql.RawBytes, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return "ERR"
		}
		for _, v := range vals {
			out = append(out, strconv.Quote(string(v)))
		}
	}
	if rows.Err() != nil {
		return "ERR"
	}
	return fmt.Sprintf("%d columns: %s", len(cols), strings.Join(out, ", "))
}

// TestClassifyAgainstMariaDB checks the classifier end to end (pre-pass
// and parser) against MariaDB 10.11: random texts hide a call of
// LAST_INSERT_ID(42), which sets what LAST_INSERT_ID() returns next, among
// strings and comments of every kind. Whenever the server ran the call
// and the classifier accepted the text, last_insert_id must be among its
// functions. (Run by hand with 40000 texts per sql_mode on 10.11.19:
// about 2200 each ran the call and classified, every one listing it, and
// none listed it without running it.)
func TestClassifyAgainstMariaDB(t *testing.T) {
	my := testenv.StartMariaDB(t, testenv.MariaDBOptions{NoTLS: true})
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Passwd = testenv.MariaDBAppUser, testenv.MariaDBAppPassword
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", my.HostPort(), testenv.MariaDBDatabase
	cfg.Timeout = 10 * time.Second
	conn, err := gomysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	db.SetMaxOpenConns(1) // LAST_INSERT_ID is the session's
	version := serverVersion(t, my.Version)

	const call = ", LAST_INSERT_ID(42)"
	pieces := []string{" ", "'", "\"", "`", "\\", "/*", "*/", "/*!", "/*M!", "/*!50700", "/*!100000", "/*M!999999",
		"--", "-- ", "#", "\n", "-", "''", "\\'", "/*+", "'a'", "\"b\"", "`c`", call, call, call}
	r := rand.New(rand.NewSource(3))
	n := 4000
	if testing.Short() {
		n = 0
	}
	for _, m := range []struct {
		mode string
		d    Dialect
	}{
		{"", Dialect{MariaDB: true, Version: version}},
		{"NO_BACKSLASH_ESCAPES", Dialect{MariaDB: true, Version: version, NoBackslashEscapes: true}},
	} {
		if _, err := db.Exec("SET SESSION sql_mode = '" + m.mode + "'"); err != nil {
			t.Fatal(err)
		}
		ran, seen := 0, 0
		for i := 0; i < n; i++ {
			var b strings.Builder
			b.WriteString("SELECT 1")
			for k := r.Intn(6) + 1; k > 0; k-- {
				b.WriteString(pieces[r.Intn(len(pieces))])
			}
			q := b.String()
			if _, err := db.Exec("SELECT LAST_INSERT_ID(0)"); err != nil {
				t.Fatal(err)
			}
			if serverResult(db, q) == "ERR" {
				continue
			}
			var id int
			if err := db.QueryRow("SELECT LAST_INSERT_ID()").Scan(&id); err != nil {
				t.Fatal(err)
			}
			st, err := ClassifyIn(m.d, q)
			if err != nil {
				continue
			}
			listed := slices.Contains(st.Functions, "last_insert_id")
			if id == 42 {
				ran++
				if !listed {
					t.Errorf("[%s] %q: the server ran LAST_INSERT_ID(42), the classifier says %+v", m.mode, q, st)
				}
			}
			if listed {
				seen++
			}
		}
		t.Logf("[%s] %d texts ran the call and classified; %d classified with it", m.mode, ran, seen)
	}
}
