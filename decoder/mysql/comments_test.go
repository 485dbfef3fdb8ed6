package mysql

import (
	"errors"
	"testing"
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
