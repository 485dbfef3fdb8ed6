package mysql

import "testing"

// TestClientCharset: the character set a statement leaves the session in,
// as the server reads it; a name inside a string or a comment that does
// not run does not count, and what cannot be named is taken as gbk-like.
func TestClientCharset(t *testing.T) {
	for _, c := range []struct {
		text    string
		want    string
		changed bool
	}{
		{"SET NAMES utf8mb4", "utf8mb4", true},
		{"SET NAMES 'gbk' COLLATE gbk_bin", "gbk", true},
		{"SET CHARACTER SET latin1", "latin1", true},
		{"SET character_set_client = sjis", "sjis", true},
		{"SET @@session.character_set_client = 'big5'", "big5", true},
		{"SET @a = 'names utf8', NAMES gbk", "gbk", true}, // a regex read the string
		{"SET NAMES utf8mb4 /*!99999 , NAMES utf8 */", "utf8mb4", true},
		{"SET NAMES DEFAULT", unknownCharset, true},
		{"SET character_set_client = @v", unknownCharset, true},
		{"SET sql_mode = 'ANSI_QUOTES'", "", false},
		{"SELEKT", unknownCharset, true},
	} {
		got, changed := clientCharset(DefaultDialect, c.text)
		if got != c.want || changed != c.changed {
			t.Errorf("%q: %q %v, want %q %v", c.text, got, changed, c.want, c.changed)
		}
	}
}
