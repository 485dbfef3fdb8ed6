package mysql

import (
	"fmt"

	"github.com/pingcap/tidb/pkg/parser/ast"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer/record"
)

// LOAD DATA LOCAL INFILE: the server answers the statement by asking the
// client for a file (a 0xfb packet naming it), and the client sends the
// file's bytes. The request comes from the server, so a server (or
// anything speaking as one) could ask for any file the client can read
// (/proc/self/environ, ~/.ssh/id_ed25519) whatever the statement said. So
// the proxy relays the request only while the command in flight is one
// LOAD DATA LOCAL INFILE statement the ruleset allowed (the default
// ruleset denies them: flag load_data_local), naming exactly the file the
// server asks for; then the client's file goes to the server, and the
// session's recording notes the file's name and size. Any other request
// ends the session: the server is not trusted with the rest of it. (The
// check is on the protocol, not on the text: ProxySQL's text check was
// bypassed with LOAD DATA /*!*/ LOCAL INFILE, GHSA-crwq-rcqp-v8jr.)

// localInfilePath returns the client file text asks for when it is a
// single LOAD DATA LOCAL INFILE statement, as the server of dialect d
// reads it (executable comments applied), or "" otherwise.
func localInfilePath(d Dialect, text string) string {
	stmts, err := parseAs(d, text)
	if err != nil || len(stmts) != 1 {
		return ""
	}
	ld, ok := stmts[0].(*ast.LoadDataStmt)
	if !ok || ld.FileLocRef != ast.FileLocClient {
		return ""
	}
	return ld.Path
}

// localInfile relays the server's request for a client file (p, whose
// payload after 0xfb is the file name) when c is an allowed LOAD DATA
// LOCAL of that file, then the client's file to the server. It returns
// an error, ending the session, for any other request.
func (r *relay) localInfile(c *decoder.Command, p []byte, seq byte) error {
	name := string(p[1:])
	want := ""
	if c != nil && !c.Blocked() && hasFlag(c.Cmd.Statement.Flags, FlagLoadDataLocal) {
		want = localInfilePath(r.s.dialect, c.Cmd.Text)
	}
	if want == "" || want != name {
		r.s.p.Log.Error("the server asked the client for a file the statement in flight does not name; session ended",
			"file", name, "statement", c.Cmd.Text)
		r.fail(codeDenied, stateDenied, fmt.Sprintf("sluice: the server asked for the client file %q, which the statement in flight does not name; the session is ended", name))
		return fmt.Errorf("the server asked for client file %q outside an allowed LOAD DATA LOCAL", name)
	}
	if err := r.cw.write(p); err != nil {
		return err
	}
	if err := r.cw.flush(); err != nil {
		return err
	}
	// The client's file, packet by packet, to an empty packet.
	r.sw.seq = seq + 1
	var size int64
	for {
		b, bseq, err := r.cr.next()
		if err != nil {
			return err
		}
		if err := r.recordClient(b, bseq); err != nil {
			return err
		}
		r.cw.seq++
		size += int64(len(b))
		if err := r.sw.write(b); err != nil {
			return err
		}
		if len(b) == 0 {
			break
		}
	}
	if err := r.sw.flush(); err != nil {
		return err
	}
	r.s.p.Session.Record(record.Commands, record.Event{Type: record.TypeNote, Kind: c.Cmd.Statement.Kind,
		Reason: fmt.Sprintf("LOAD DATA LOCAL INFILE: the client sent %d bytes of its file", size), Text: name})
	r.s.p.Log.Info("client file sent for LOAD DATA LOCAL INFILE", "file", name, "bytes", size)
	return nil
}

func hasFlag(flags []string, f string) bool {
	for _, x := range flags {
		if x == f {
			return true
		}
	}
	return false
}
