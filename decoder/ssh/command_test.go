package ssh

import (
	"path"
	"slices"
	"strings"
	"testing"

	"mvdan.cc/sh/v3/syntax"
)

func TestParseCommand(t *testing.T) {
	for _, c := range []struct {
		cmd      string
		argv     []string
		programs []string
	}{
		{"cat /etc/app.conf", []string{"cat", "/etc/app.conf"}, []string{"cat"}},
		{"'pg_dump' -d prod", []string{"pg_dump", "-d", "prod"}, []string{"pg_dump"}},
		{`/usr/bin/pg_dump "my db"`, []string{"/usr/bin/pg_dump", "my db"}, []string{"pg_dump"}},
		{`pg\_dump x`, []string{"pg_dump", "x"}, []string{"pg_dump"}},
		{"git-upload-pack '/srv/repo.git'", []string{"git-upload-pack", "/srv/repo.git"}, []string{"git-upload-pack"}},
		{"scp -t /tmp", []string{"scp", "-t", "/tmp"}, []string{"scp"}},
		{"pg_dump prod | gzip", nil, []string{"pg_dump", "gzip"}},
		{"true && pg_dump prod", nil, []string{"true", "pg_dump"}},
		{"echo $(pg_dump prod)", nil, []string{"echo", "pg_dump"}},
		{"ls *.sql", nil, []string{"ls"}},
		{"cat ~/x", nil, []string{"cat"}},
		{"cat > /tmp/x", nil, []string{"cat"}},
		{"A=1 env", nil, []string{"env"}},
		{"$p prod", nil, []string{"?"}},
		{"env FOO=1 pg_dump prod", []string{"env", "FOO=1", "pg_dump", "prod"}, []string{"env", "pg_dump"}},
		{"sudo -u postgres pg_dumpall", []string{"sudo", "-u", "postgres", "pg_dumpall"}, []string{"sudo", "pg_dumpall"}},
		{"nice -n 5 timeout 10 pg_dump x", []string{"nice", "-n", "5", "timeout", "10", "pg_dump", "x"}, []string{"nice", "timeout", "pg_dump"}},
		{"sh -c 'pg_dump prod > /tmp/x'", []string{"sh", "-c", "pg_dump prod > /tmp/x"}, []string{"sh", "pg_dump"}},
		{`bash -lc "sh -c 'mysqldump db'"`, []string{"bash", "-lc", "sh -c 'mysqldump db'"}, []string{"bash", "sh", "mysqldump"}},
		{"echo cGdfZHVtcA== | base64 -d | sh", nil, []string{"echo", "base64", "sh", "?"}},
		{"busybox sh -c 'pg_dump x'", []string{"busybox", "sh", "-c", "pg_dump x"}, []string{"busybox", "sh", "pg_dump"}},
		{"if true; then pg_dump x; fi", nil, []string{"true", "pg_dump"}},
		{"for i in 1; do mysqldump; done", nil, []string{"mysqldump"}},
		{"echo 'unterminated", nil, []string{"?"}},
		{"", nil, nil},
	} {
		argv, programs := ParseCommand(c.cmd)
		if !slices.Equal(argv, c.argv) || !slices.Equal(programs, c.programs) {
			t.Errorf("ParseCommand(%q) = %q, %q; want %q, %q", c.cmd, argv, programs, c.argv, c.programs)
		}
	}
}

// FuzzParseCommand: an argv is exactly what the shell would run. Quoted
// back word by word and parsed again, it gives the same argv, and its
// program is among the programs.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"cat /etc/app.conf", "pg_dump prod | gzip", `a "b c" 'd'`, "sh -c 'x y'", `a\ b`, "env A=1 b", "x $(y)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		argv, programs := ParseCommand(cmd)
		if len(programs) > maxPrograms {
			t.Fatalf("%d programs", len(programs))
		}
		if argv == nil {
			return
		}
		words := make([]string, len(argv))
		for i, a := range argv {
			q, err := syntax.Quote(a, syntax.LangBash)
			if err != nil {
				return // not representable (NUL bytes): nothing to compare
			}
			words[i] = q
		}
		again, _ := ParseCommand(strings.Join(words, " "))
		if !slices.Equal(again, argv) {
			t.Fatalf("argv %q of %q quoted back parses as %q", argv, cmd, again)
		}
		name := path.Base(argv[0])
		if argv[0] == "" {
			name = unknownProgram
		}
		if len(programs) == 0 || programs[0] != name {
			t.Fatalf("programs %q of %q do not start with %q", programs, cmd, name)
		}
	})
}
