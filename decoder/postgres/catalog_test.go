package postgres

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// injectionName is the table name from the report that made the proxy
// run a DROP of its own: under standard_conforming_strings = off, quote
// doubling leaves the backslash to escape the quote.
const injectionName = `x\' OR true)); DROP TABLE victims; --`

// TestLookupNotInjectable: a masked SELECT from a table with that name,
// under both settings of standard_conforming_strings, through the simple
// and the extended protocol, returns masked values, and the table the
// payload drops survives.
func TestLookupNotInjectable(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and a PostgreSQL server")
	}
	env := startDiffEnv(t)
	ident := `"` + strings.ReplaceAll(injectionName, `"`, `""`) + `"`
	env.pg.Admin(t, "create table victims(id int); insert into victims values (1);"+
		"create table "+ident+"(id int, secret text); insert into "+ident+" values (1, 'topsecret-value')")
	for _, scs := range []string{"on", "off"} {
		t.Run("standard_conforming_strings="+scs, func(t *testing.T) {
			cl, err := dialClient(env.proxy)
			if err != nil {
				t.Fatal(err)
			}
			defer cl.close()
			msgs, err := cl.run([]pgproto3.FrontendMessage{
				&pgproto3.Query{String: "SET standard_conforming_strings = " + scs},
				&pgproto3.Query{String: "SELECT secret FROM " + ident},
				&pgproto3.Parse{Query: "SELECT id, secret FROM " + ident + " WHERE id = $1"},
				&pgproto3.Bind{Parameters: [][]byte{[]byte("1")}},
				&pgproto3.Execute{}, &pgproto3.Sync{},
			})
			if err != nil {
				t.Fatal(err)
			}
			rows := 0
			for _, m := range msgs {
				switch m.typ {
				case 'E':
					t.Errorf("error: %q", m.body)
				case 'D':
					rows++
					if bytes.Contains(m.body, []byte("topsecret")) || !bytes.Contains(m.body, []byte("h:")) {
						t.Errorf("row not masked: %q", m.body)
					}
				}
			}
			if rows != 2 {
				t.Errorf("%d rows, want 2", rows)
			}
			if out := env.pg.Admin(t, "select count(*) from victims"); !strings.Contains(out, "1") {
				t.Fatalf("victims: %q", out)
			}
		})
	}
}

// FuzzLookupMessages: whatever names a client's statements make the
// proxy look up, the text the server parses is the fixed lookup query,
// and the names travel only as Bind parameters, intact.
func FuzzLookupMessages(f *testing.F) {
	f.Add(injectionName, "public", uint32(16384))
	f.Add(`a'b`, `s"c\`, uint32(0))
	f.Add("", "$$; DROP TABLE t; --", uint32(1))
	f.Fuzz(func(t *testing.T, name, schema string, oid uint32) {
		names := []string{name, schema + "." + name}
		buf := lookupMessages(nil, "sluice_lookup_x", names, []uint32{oid}, true)
		be := pgproto3.NewBackend(bytes.NewReader(buf), nil)
		var parses, binds int
		for {
			m, err := be.Receive()
			if err != nil {
				t.Fatalf("receive: %v", err)
			}
			switch m := m.(type) {
			case *pgproto3.Parse:
				parses++
				if m.Query != lookupSQL {
					t.Fatalf("the lookup's text changed: %q", m.Query)
				}
			case *pgproto3.Bind:
				binds++
				var schemas, rels []string
				for _, n := range names {
					s, r, ok := strings.Cut(n, ".")
					if !ok {
						s, r = "", s
					}
					schemas, rels = append(schemas, s), append(rels, r)
				}
				if got := decodeTextArray(t, m.Parameters[0]); fmt.Sprint(got) != fmt.Sprint(schemas) {
					t.Fatalf("schemas %q, want %q", got, schemas)
				}
				if got := decodeTextArray(t, m.Parameters[1]); fmt.Sprint(got) != fmt.Sprint(rels) {
					t.Fatalf("names %q, want %q", got, rels)
				}
			case *pgproto3.Sync:
				if parses != 1 || binds != 1 {
					t.Fatalf("%d Parse, %d Bind", parses, binds)
				}
				return
			}
		}
	})
}

func decodeTextArray(t *testing.T, b []byte) []string {
	t.Helper()
	if len(b) < 12 {
		t.Fatalf("short array %q", b)
	}
	if binary.BigEndian.Uint32(b) == 0 {
		return nil
	}
	n := int(binary.BigEndian.Uint32(b[12:]))
	b = b[20:]
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		l := int(binary.BigEndian.Uint32(b))
		out = append(out, string(b[4:4+l]))
		b = b[4+l:]
	}
	return out
}
