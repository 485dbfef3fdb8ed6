package mysql

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// leak is the value FuzzRelayRows plants; masked, it must never reach
// the client.
const leak = "leak.person@example.com"

// fuzzRules masks every column named email by column, and emails anywhere
// by detector.
const fuzzRules = `
target "my" {
  protocol = "mysql"
  address  = ["127.0.0.1:3306"]
}
policy "ci" {
  targets = ["my"]
  mask "emails" {
    columns = ["*.email"]
    detect  = ["email"]
    using   = "hash"
  }
}
`

// fuzzRelay runs one session's command phase in process: the client sends
// client, the server answers with server, and what the client got is
// returned.
func fuzzRelay(t testing.TB, client, server []byte) []byte {
	rs, diags := ruleset.Parse(map[string][]byte{"f.hcl": []byte(fuzzRules)})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	m := rs.Match(ruleset.Flow{Target: ruleset.Endpoint{Name: "my", Protocol: ruleset.ProtoMySQL}})
	sess := enforcer.NewSession(context.Background(), m, nil, record.None, hclog.NewNullLogger())
	p := Params{Session: sess, Classify: NewCache(0).Classify, Masks: mask.NewCache([]byte("0123456789abcdef0123456789abcdef")),
		MaxMessage: 1 << 20, Log: hclog.NewNullLogger()}
	s := &session{p: p, ctx: context.Background(), dialect: DefaultDialect}
	s.decider = decoder.Decider{Session: sess, Masks: p.Masks}
	var out bytes.Buffer
	r := newRelay(s, &login{cr: newPacketReader(bytes.NewReader(client), 1<<20), sr: newPacketReader(bytes.NewReader(server), 1<<20),
		cw: newPacketWriter(&out), sw: newPacketWriter(io.Discard)})
	r.run()
	r.cw.flush()
	return out.Bytes()
}

// emailColumn is a column definition of people.email (VAR_STRING).
func emailColumn() []byte {
	var b []byte
	for _, f := range []string{"def", "app", "people", "people", "email", "email"} {
		b = appendLenencString(b, []byte(f))
	}
	return append(b, 0x0c, 45, 0, 0, 2, 0, 0, typeVarString, 0, 0, 0, 0, 0)
}

// FuzzRelayRows: the server answers a SELECT of people.email with a
// column definition and then whatever the fuzzer wrote as its row
// packets, each framed as a packet. Whatever the rows say (well formed,
// truncated, an ERR, an early EOF, a row of several values), the planted
// email never reaches the client: a value is masked, a malformed row
// refuses the result, an error message goes through the detectors.
func FuzzRelayRows(f *testing.F) {
	f.Add([]byte{byte(len(leak))}, []byte(leak), []byte{0xfe, 0, 0, 2, 0})
	f.Add([]byte{0xfb}, []byte{}, []byte{})
	f.Add(append([]byte{0xff, 0x26, 0x04, '#'}, "23000Duplicate entry '"+leak+"' for key 'email'"...), []byte{}, []byte{})
	f.Add([]byte{byte(len(leak) + 2)}, []byte(leak), []byte("xx"))
	f.Fuzz(func(t *testing.T, row1, row2, row3 []byte) {
		query := append([]byte{comQuery}, "SELECT email FROM people"...)
		client := framed(query, 0)
		var server []byte
		seq := byte(1)
		for _, p := range [][]byte{{1}, emailColumn(), {0xfe, 0, 0, 2, 0}, row1, append(row2, row3...), row3, {0xfe, 0, 0, 2, 0}} {
			server = append(server, framed(p, seq)...)
			seq++
		}
		done := make(chan []byte, 1)
		go func() { done <- fuzzRelay(t, client, server) }()
		var out []byte
		select {
		case out = <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("the relay did not finish on bounded input")
		}
		if bytes.Contains(out, []byte(leak)) {
			t.Fatalf("the masked email reached the client:\n%q", out)
		}
	})
}
