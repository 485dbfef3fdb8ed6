package mysql

import (
	"errors"
	"fmt"
	"strings"
)

// This file applies a statement's executable comments the way the server
// would, before the text reaches TiDB's parser, which drops /*M! ... */
// and runs every /*! ... */ whatever the version: without it,
// SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */ classifies as a harmless
// SELECT but reads a file on MariaDB.
//
// The rules are MariaDB 10.11's and MySQL 8.0's lexers (sql_lex.cc):
//
//   - /*! ... */ runs on both. /*M! ... */ runs on MariaDB only; MySQL
//     reads it as an ordinary comment (only a capital M counts).
//   - /*!NNNNN ... */ and /*M!NNNNN ... */ (five digits, or six on
//     MariaDB when a sixth digit follows) run when the server's version is
//     at least NNNNN. MariaDB skips /*!50700 to /*!99999 (MySQL 5.7 and
//     8.0 syntax) whatever its version, but not /*M! with those numbers.
//     Fewer than five digits are not a version: the comment runs and the
//     digits are code. A comment that runs is lexed as code up to a "*/"
//     outside quotes; one that does not is skipped up to the first "*/",
//     quotes or not.
//   - Strings ('...', "..."), backquoted names and the three kinds of
//     comment (# to the end of the line, "-- " when a space or a control
//     character follows the dashes, /* ... */) are lexed as the server
//     lexes them: a backslash escapes the next byte in a string unless
//     NO_BACKSLASH_ESCAPES is set, a doubled quote is a quote, a
//     backquoted name has no escapes, and /* ... */ does not nest.
//   - /*+ ... */ is an optimizer hint on MySQL (after SELECT, INSERT,
//     REPLACE, UPDATE or DELETE) and on MariaDB 12; elsewhere it is a
//     comment. Either way nothing in it runs as SQL. It is dropped like
//     any comment on MariaDB and kept for the parser on MySQL, where a
//     SET_VAR hint changes a variable for the statement.
//
// Whatever the lexer cannot place with certainty is an error, and the
// caller denies the statement: an unterminated string, name or comment;
// a comment, a ";" or a "# ..." or "-- " comment inside a comment that
// runs (the server would end the statement there, or nest in ways its
// versions disagree on); a NUL byte (MariaDB ends a # comment at one);
// "--" before a byte of 0x80 or more (whether that byte is a space
// depends on the character set); a quote or "/*" inside an optimizer hint
// (MySQL's hint lexer has its own quoting rules); a six-digit version
// comment on MySQL (MySQL 8.0 reads five digits and warns about the
// sixth: its meaning is changing); a versioned comment when the Dialect
// has no Version; \" inside a double-quoted token when ANSI_QUOTES is not
// known to be on (with ANSI_QUOTES the backslash does not escape, and the
// token ends earlier; the wire does not tell the proxy the sql_mode), and
// any backslash in one when it is (TiDB's lexer escapes with it even
// then); and,
// for character sets whose two-byte characters may end in a backslash or
// backquote byte (big5, cp932, gbk, gb18030, sjis), a byte of 0x80 or
// more followed by one.
//
// The expansion replaces each comment, and each marker of a comment that
// runs, by a space: the server also ends a token at a comment. That space
// must not make a comment of its own for the parser ("--/**/ x" is two
// minus signs to the server but "-- x" would be a comment to the parser),
// so an expansion is lexed again and must hold no comment but hints.

// ErrUncertainLexing is returned (wrapped) when the classifier cannot tell
// with certainty how the server would lex a statement's text, such as
// where a comment or a string ends. Callers deny the statement.
var ErrUncertainLexing = errors.New("cannot lex the statement as the server would")

func lexError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrUncertainLexing}, args...)...)
}

// expand returns text with its executable comments applied as the server
// of d would, every other comment replaced by a space (optimizer hints
// are kept on MySQL), and whether hints were kept. When text has no
// comment, it is returned as is.
func expand(d Dialect, text string) (out string, hints bool, err error) {
	if err := checkBytes(d, text); err != nil {
		return "", false, err
	}
	x := expander{d: d, s: text}
	if err := x.run(false); err != nil {
		return "", false, err
	}
	if x.out == nil {
		return text, x.hints, nil
	}
	out = string(x.out)
	// The parser must not find a comment the server did not see.
	v := expander{d: d, s: out}
	if err := v.run(true); err != nil {
		return "", false, err
	}
	return out, x.hints, nil
}

// checkBytes rejects the bytes that make lexing depend on more than d.
func checkBytes(d Dialect, s string) error {
	if i := strings.IndexByte(s, 0); i >= 0 {
		return lexError("NUL byte at offset %d", i)
	}
	if !d.multibyteTrail() {
		return nil
	}
	for i := 0; i+1 < len(s); i++ {
		if s[i] >= 0x80 && (s[i+1] == '\\' || s[i+1] == '`') {
			return lexError("a byte of 0x80 or more before %q at offset %d: in %s it may be one character", s[i+1], i, d.Charset)
		}
	}
	return nil
}

// multibyteTrail reports whether d's character set has two-byte
// characters whose second byte may be a backslash or a backquote.
func (d Dialect) multibyteTrail() bool {
	switch strings.ToLower(d.Charset) {
	case "big5", "cp932", "gbk", "gb18030", "sjis":
		return true
	}
	return false
}

// maxParens bounds how deeply a text nests parentheses. TiDB's parser
// takes seconds over a few megabytes of nested subqueries before the
// walker's own bound could refuse them; MariaDB refuses a SELECT nested
// more than 63 deep, and no statement a person or a program writes nests
// expressions a thousand deep.
const maxParens = 1000

// expander is one pass over a text.
type expander struct {
	d      Dialect
	s      string
	out    []byte // nil until something changes
	copied int    // s[:copied] is in out
	hints  bool
	verify bool // the second pass: any comment but a hint is an error
}

// replace writes s[copied:from] and then a space in place of s[from:to].
func (x *expander) replace(from, to int) {
	if x.out == nil {
		x.out = make([]byte, 0, len(x.s))
	}
	x.out = append(x.out, x.s[x.copied:from]...)
	x.out = append(x.out, ' ')
	x.copied = to
}

func (x *expander) run(verify bool) error {
	x.verify = verify
	s := x.s
	inExec := -1 // offset of the executable comment being lexed as code
	parens := 0
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '(':
			if parens++; parens > maxParens {
				return fmt.Errorf("%w: more than %d parentheses deep", ErrUnsupported, maxParens)
			}
			i++
		case c == ')':
			parens--
			i++
		case c == '\'' || c == '"' || c == '`':
			end, err := x.quoted(i)
			if err != nil {
				return err
			}
			i = end
		case c == '#':
			if err := x.lineComment(i, inExec); err != nil {
				return err
			}
			i = x.lineEnd(i)
		case c == '-' && strings.HasPrefix(s[i:], "--"):
			if i+2 < len(s) && s[i+2] >= 0x80 {
				return lexError(`"--" before a byte of 0x80 or more at offset %d`, i)
			}
			if i+2 == len(s) || isSpaceOrControl(s[i+2]) {
				if err := x.lineComment(i, inExec); err != nil {
					return err
				}
				i = x.lineEnd(i)
				continue
			}
			i++ // a minus sign: "--- x" is a minus and a comment
		case c == '/' && strings.HasPrefix(s[i:], "/*"):
			if inExec >= 0 {
				return lexError("a comment at offset %d inside the executable comment at offset %d", i, inExec)
			}
			next, exec, err := x.comment(i)
			if err != nil {
				return err
			}
			if exec {
				inExec = i
			}
			i = next
		case c == '*' && inExec >= 0 && strings.HasPrefix(s[i:], "*/"):
			x.replace(i, i+2)
			inExec = -1
			i += 2
		case c == ';' && inExec >= 0:
			return lexError("a ';' at offset %d inside the executable comment at offset %d", i, inExec)
		default:
			i++
		}
	}
	if inExec >= 0 {
		return lexError("unterminated executable comment at offset %d", inExec)
	}
	if x.out != nil {
		x.out = append(x.out, s[x.copied:]...)
	}
	return nil
}

// isSpaceOrControl reports whether the byte after "--" makes it a comment
// (my_isspace or my_iscntrl, for the ASCII range).
func isSpaceOrControl(c byte) bool {
	return c <= ' ' || c == 0x7f
}

func (x *expander) lineEnd(i int) int {
	if n := strings.IndexByte(x.s[i:], '\n'); n >= 0 {
		return i + n // the newline stays, as code
	}
	return len(x.s)
}

// lineComment handles a # or -- comment at i.
func (x *expander) lineComment(i, inExec int) error {
	if x.verify {
		return lexError("expanding the comments at offset %d made a comment the server does not see", i)
	}
	if inExec >= 0 {
		return lexError("a line comment at offset %d inside the executable comment at offset %d", i, inExec)
	}
	x.replace(i, x.lineEnd(i))
	return nil
}

// quoted returns the offset after the string or quoted name at i.
func (x *expander) quoted(i int) (int, error) {
	s := x.s
	q := s[i]
	escapes := q != '`' && !x.d.NoBackslashEscapes && !(q == '"' && x.d.ANSIQuotes)
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if q == '"' && x.d.ANSIQuotes && !x.d.NoBackslashEscapes {
				// The server ends the name at the next quote; TiDB's
				// lexer escapes with the backslash all the same.
				return 0, lexError(`a backslash in the double-quoted name at offset %d`, i)
			}
			if !escapes {
				continue
			}
			if j+1 < len(s) && s[j+1] == '"' && q == '"' {
				return 0, lexError(`\" in the double-quoted token at offset %d: it ends elsewhere if ANSI_QUOTES is set`, i)
			}
			j++
		case q:
			if j+1 < len(s) && s[j+1] == q {
				j++
				continue
			}
			return j + 1, nil
		}
	}
	return 0, lexError("unterminated %c at offset %d", q, i)
}

// comment handles the comment starting at i ("/*"): an ordinary comment
// or one that does not run becomes a space, a hint is kept or dropped, and
// a comment that runs loses its marker. It returns where lexing goes on
// and whether it is inside an executable comment from there.
func (x *expander) comment(i int) (next int, exec bool, err error) {
	s := x.s
	rest := s[i+2:]
	switch {
	case strings.HasPrefix(rest, "!"):
		return x.executable(i, i+3, false)
	case strings.HasPrefix(rest, "M!") && x.d.MariaDB:
		return x.executable(i, i+4, true)
	case strings.HasPrefix(rest, "+"):
		end := strings.Index(rest, "*/")
		if end < 0 {
			return 0, false, lexError("unterminated optimizer hint at offset %d", i)
		}
		body := rest[1:end]
		if strings.ContainsAny(body, "'\"`") || strings.Contains(rest[1:end+2], "/*") { // "/*/" too
			return 0, false, lexError("a quote or comment inside the optimizer hint at offset %d", i)
		}
		next = i + 2 + end + 2
		if x.d.MariaDB {
			if x.verify {
				return 0, false, lexError("expanding the comments at offset %d made a comment the server does not see", i)
			}
			x.replace(i, next)
		} else {
			x.hints = true
		}
		return next, false, nil
	}
	if x.verify {
		return 0, false, lexError("expanding the comments at offset %d made a comment the server does not see", i)
	}
	end := strings.Index(rest, "*/")
	if end < 0 {
		return 0, false, lexError("unterminated comment at offset %d", i)
	}
	next = i + 2 + end + 2
	x.replace(i, next)
	return next, false, nil
}

// executable handles /*! or /*M! at i, whose version digits (if any)
// start at p.
func (x *expander) executable(i, p int, mariaSyntax bool) (next int, exec bool, err error) {
	if x.verify {
		return 0, false, lexError("expanding the comments at offset %d made a comment the server does not see", i)
	}
	s := x.s
	digits := 0
	for p+digits < len(s) && s[p+digits] >= '0' && s[p+digits] <= '9' {
		digits++
	}
	if digits < 5 {
		// Not a version: the comment runs, digits and all.
		x.replace(i, p)
		return p, true, nil
	}
	n := 5
	if digits > 5 {
		if !x.d.MariaDB {
			return 0, false, lexError("a six-digit version in the comment at offset %d", i)
		}
		n = 6
	}
	if x.d.Version <= 0 {
		return 0, false, lexError("a versioned comment at offset %d and no server version", i)
	}
	version := 0
	for _, c := range s[p : p+n] {
		version = version*10 + int(c-'0')
	}
	runs := version <= x.d.Version
	if x.d.MariaDB && !mariaSyntax && version >= 50700 && version <= 99999 {
		runs = false // MariaDB skips MySQL 5.7 and 8.0 versioned comments
	}
	if runs {
		x.replace(i, p+n)
		return p + n, true, nil
	}
	// Skipped up to the first */, quotes or not, read from left to right
	// as the server does: in "/*/" the slash and star open a comment
	// before the star and slash could close one. The server allows one
	// nested /* ... */ in it; we refuse any.
	for j := p + n; j+1 < len(s); j++ {
		switch {
		case s[j] == '/' && s[j+1] == '*':
			return 0, false, lexError("a comment inside the versioned comment at offset %d", i)
		case s[j] == '*' && s[j+1] == '/':
			x.replace(i, j+2)
			return j + 2, false, nil
		}
	}
	return 0, false, lexError("unterminated comment at offset %d", i)
}
