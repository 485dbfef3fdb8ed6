package mysql

import (
	"slices"
	"testing"
)

// fuzzDialects are the dialects FuzzClassify picks from.
var fuzzDialects = []Dialect{
	{MariaDB: true, Version: 101100},
	{MariaDB: true, Version: 101100, NoBackslashEscapes: true},
	{MariaDB: true, Version: 101100, ANSIQuotes: true},
	{Version: 80036},
	{Version: 80036, NoBackslashEscapes: true},
	{MariaDB: true, Version: 101100, Charset: "gbk"},
}

// hide is a call that reads a server file, put where the server runs it.
const hide = ", LOAD_FILE(0x2f) "

// FuzzClassify checks properties that hold without a server:
//
//   - classification never panics, and the cache agrees with it;
//   - the expansion is a fixed point: expanding it again changes nothing
//     (it holds no comment the server did not see);
//   - whatever s is, LOAD_FILE, INTO OUTFILE or LOAD DATA LOCAL before it,
//     in or around an executable comment, is in the classification's
//     flags unless classification fails;
//   - so is LOAD_FILE inside an executable comment, or in plain code,
//     after s, once s has closed its strings and comments and a newline
//     has ended any line comment. A parser that ended a string or comment elsewhere than the
//     pre-pass did would lose the call: this is the pre-pass and the
//     parser checked against each other.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{
		"", "1", "1 FROM t WHERE a = 'x'", "'a\\'", "\"a\\\\\"", "`a``b`", "/* x */ 1", "1 -- x", "1 # x",
		"1 /*! , 2 */", "1 /*M!100000 , 2 */", "1 /*!99999 '*/", "1 --/**/1", "'", "/*", "/*!", "*/", ";",
		"1; DELETE FROM t", "1 UNION SELECT b FROM u", "1 INTO OUTFILE '/tmp/x'", "\xbf\\'", "--\xa0", "/*+ x */ 1",
	} {
		for d := range fuzzDialects {
			f.Add(s, uint8(d))
		}
	}
	f.Fuzz(func(t *testing.T, s string, di uint8) {
		d := fuzzDialects[int(di)%len(fuzzDialects)]
		st, lf, err := ClassifyForCache(d, s)
		if err != nil && lf {
			t.Fatalf("ClassifyForCache(%q): literal-free with an error", s)
		}
		if c, cerr := NewCache(4).Classify(d, s); (cerr == nil) != (err == nil) || c.Kind != st.Kind || !slices.Equal(c.Flags, st.Flags) {
			t.Fatalf("Cache.Classify(%q) = %+v, %v; ClassifyForCache = %+v, %v", s, c, cerr, st, err)
		}
		if out, _, err := expand(d, s); err == nil {
			again, _, err := expand(d, out)
			if err != nil || again != out {
				t.Fatalf("expand(%q) = %q, which expands to %q, %v", s, out, again, err)
			}
		}

		// Leading: the comment opens the text, so it runs.
		for _, lead := range []struct{ text, flag string }{
			{"/*! SELECT 1" + hide + "*/ ", FlagLoadFile},
			{"/*!SELECT 1 FROM t INTO OUTFILE '/tmp/x'*/ ", FlagIntoOutfile},
			{"LOAD DATA /*!*/ LOCAL INFILE '/etc/passwd' INTO TABLE t ", FlagLoadDataLocal},
			{"LOAD DATA /*!LOCAL*/ INFILE '/etc/passwd' INTO TABLE t ", FlagLoadDataLocal},
		} {
			text := lead.text + s
			if st, err := ClassifyIn(d, text); err == nil && !slices.Contains(st.Flags, lead.flag) {
				t.Fatalf("ClassifyIn(%+v, %q) = %+v: %s is missing", d, text, st, lead.flag)
			}
		}
		// Trailing: only when s leaves the lexer outside strings and
		// comments.
		prefix := "SELECT 1 " + s + "\n"
		if _, _, err := expand(d, prefix); err != nil {
			return
		}
		marker := "/*!"
		if d.MariaDB {
			marker = "/*M!"
		}
		text := prefix + marker + hide + "*/"
		if st, err := ClassifyIn(d, text); err == nil && !slices.Contains(st.Flags, FlagLoadFile) {
			t.Fatalf("ClassifyIn(%+v, %q) = %+v: the trailing comment's LOAD_FILE is missing", d, text, st)
		}
		// The same call in plain code after s.
		text = prefix + hide
		if st, err := ClassifyIn(d, text); err == nil && !slices.Contains(st.Flags, FlagLoadFile) {
			t.Fatalf("ClassifyIn(%+v, %q) = %+v: LOAD_FILE after s is missing", d, text, st)
		}
	})
}
