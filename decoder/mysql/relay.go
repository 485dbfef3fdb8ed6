package mysql

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/decoder"
	"github.com/sluicehq/sluice/enforcer"
	"github.com/sluicehq/sluice/enforcer/mask"
	"github.com/sluicehq/sluice/enforcer/record"
	"github.com/sluicehq/sluice/ruleset"
)

// The command phase is half duplex: the client sends one command, the
// server answers it whole, then the next command. The relay reads a
// command, decides it, and relays the server's answer packet by packet
// (answer.go) before it reads the next; a client that sends commands
// without waiting has them read and decided one at a time, as the server
// would. (There is no pipelining to keep apart, unlike PostgreSQL's
// extended protocol, whose two-loop runner stays in decoder/postgres.) It
// runs on the relay core's thread (core.go), or on one goroutine.

// maxStatements bounds the prepared statements a session keeps; the
// server's own default bound (max_prepared_stmt_count) is 16382 for the
// whole server.
const maxStatements = 16384

// relay is the command phase of one session.
type relay struct {
	s      *session
	cr, sr *packetReader
	cw, sw *packetWriter

	stmts map[uint32]*stmt
	plans decoder.Plans[colKey]
	// lastMasker is the masker of the last masked command: a later
	// error's message goes through its detectors too.
	lastMasker *mask.Masker
	rowBuf     []byte
	valBuf     []byte
	binVals    []binVal // maskBinary's, reused row to row
	numBuf     []byte   // maskBinary's text of a number
	notify     decoder.Notify

	// ans is the server's answer the relay waits for (answer.go).
	ans *answer

	// The relay core (core.go): core is set while the session runs
	// there. What the core left to the goroutines: pre, a decision made
	// there, for resume, the command it decided; carry (carrySeq), a
	// server packet of the answer in flight, and held, the verdict that
	// holds the result at it; leftFor says why (Stats.RelayCore).
	core     *coreSession
	pre      *decoder.Command
	resume   []byte
	carry    []byte
	carrySeq byte
	held     *enforcer.Verdict
	leftFor  string
}

// stmt is a prepared statement the server acknowledged.
type stmt struct {
	c       *decoder.Command
	nparams int
	// An open cursor's columns and result state, for COM_STMT_FETCH.
	cursor *result
}

func newRelay(s *session, lg *login) *relay {
	r := &relay{s: s, cr: lg.cr, sr: lg.sr, cw: lg.cw, sw: lg.sw, stmts: map[uint32]*stmt{}}
	r.plans.Origins = origins
	r.notify = func(id, msg string) {
		// MySQL has no message a server sends while a command runs: the
		// client waits in silence, and the hold is in the log and in
		// sluice approvals.
		s.p.Log.Info("statement held for approval", "hold", id, "message", msg)
	}
	return r
}

// The recording of the client hop (decoder.WireTap): what the client is
// sent is recorded as it is written (tapWrites, on the connection); what
// it sends is recorded packet by packet as the relay reads it
// (recordClient), so that a packet that must not be recorded never is: a
// COM_CHANGE_USER, which carries a password's proof, is left out.

// tapWrites is the client connection's tap: only what the client is sent.
func (s *session) tapWrites(dir string, b []byte) error {
	if dir == record.DirClientToServer {
		return nil
	}
	return s.tap.Tap(dir, b)
}

// recordClient records a packet the client sent (its payload b, its
// first frame's sequence id), framed as it crossed the wire.
func (r *relay) recordClient(b []byte, seq byte) error {
	if !r.s.p.Session.WantsWire() {
		return nil
	}
	var buf []byte
	for {
		n := min(len(b), maxPiece)
		buf = append(buf, byte(n), byte(n>>8), byte(n>>16), seq)
		buf = append(buf, b[:n]...)
		seq++
		b = b[n:]
		if n < maxPiece {
			break
		}
	}
	return r.s.tap.Tap(record.DirClientToServer, buf)
}

// run relays commands until either side ends: on the relay core where
// the session can run there (core.go), else, or once it left the core,
// on this goroutine.
func (r *relay) run() error {
	if done, err := r.onCore(); done {
		return err
	}
	// Where the core stopped: an answer part way, or a command decided
	// there that waits for a human.
	if err := r.await(); err != nil {
		return err
	}
	if b := r.resume; b != nil {
		r.resume = nil
		if done, err := r.command(b); err != nil || done {
			return err
		}
	}
	for {
		if err := r.await(); err != nil {
			return err
		}
		done, err := r.clientPacket()
		if err != nil || done {
			return err
		}
	}
}

// clientPacket reads the client's next command and handles it. done ends
// the session cleanly (COM_QUIT, or the client's end).
func (r *relay) clientPacket() (done bool, err error) {
	b, seq, err := r.cr.next()
	if err != nil {
		var pe *ProtocolError
		if errors.As(err, &pe) {
			r.fail(codeHandshake, stateHandshake, "sluice: "+pe.Msg)
			return true, err
		}
		if errClosed(err) {
			return true, nil
		}
		return true, err
	}
	if len(b) == 0 {
		r.fail(codeUnknownCom, stateHandshake, "sluice: an empty command")
		return true, &ProtocolError{Msg: "an empty command"}
	}
	if b[0] != comChangeUser {
		if err := r.recordClient(b, seq); err != nil {
			r.fail(codeConnKilled, stateConnKilled, "sluice: the session cannot be recorded")
			return true, err
		}
	}
	return r.command(b)
}

// command handles one command from the client: decided (decideCmd),
// refused or sent, its answer expected. done ends the session cleanly
// (COM_QUIT). On the core, a command that must wait (a hold, a
// COM_CHANGE_USER's login) is left to the goroutines (errOffCore).
func (r *relay) command(b []byte) (done bool, err error) {
	if r.core != nil && b[0] == comChangeUser {
		err := r.leaveCommand(b, nil, "a COM_CHANGE_USER")
		clear(b) // it holds a password's proof: only the copy is kept
		return false, err
	}
	c := r.pre
	r.pre = nil
	if c == nil {
		c = r.decideCmd(b)
	}
	if c != nil {
		if r.core != nil && c.Verdict.Action == ruleset.Hold && r.s.p.Session.CanHold() {
			return false, r.leaveCommand(b, c, "a statement held for approval")
		}
		r.s.decider.AwaitHold(r.s.ctx, c, r.notify)
		if c.Blocked() {
			return false, r.deny(c)
		}
	}
	switch b[0] {
	case comQuit:
		r.forward(b)
		return true, nil
	case comQuery:
		return false, r.send(b, &answer{kind: ansResults, c: c, lexing: true, done: true})
	case comStmtPrepare:
		if len(r.stmts) >= maxStatements {
			r.fail(1461, "42000", fmt.Sprintf("sluice: a session may keep at most %d prepared statements", maxStatements))
			return false, nil
		}
		return false, r.send(b, &answer{kind: ansPrepare, c: c})
	case comStmtExecute:
		st := r.stmtOf(b)
		if st == nil {
			return false, r.unknownStmt()
		}
		st.cursor = nil
		if st.c.Blocked() {
			return false, r.deny(st.c) // never: a blocked statement is never prepared
		}
		return false, r.send(b, &answer{kind: ansResults, c: st.c, st: st, binary: true, lexing: true, done: true})
	case comStmtFetch:
		st := r.stmtOf(b)
		if st == nil {
			return false, r.unknownStmt()
		}
		if st.cursor == nil {
			// No cursor the proxy knows the columns of: the rows could
			// not be masked.
			r.fail(codeDenied, stateDenied, "sluice: COM_STMT_FETCH without an open cursor")
			return false, nil
		}
		return false, r.send(b, &answer{kind: ansFetch, c: st.c, st: st, res: st.cursor})
	case comStmtSendLongData:
		if r.stmtOf(b) == nil {
			// No answer is owed for long data: the execute that follows
			// gets the error.
			return false, nil
		}
		return false, r.forward(b)
	case comStmtClose:
		if len(b) >= 5 {
			delete(r.stmts, le32(b[1:]))
		}
		return false, r.forward(b)
	case comStmtReset:
		st := r.stmtOf(b)
		if st == nil {
			return false, r.unknownStmt()
		}
		st.cursor = nil
		return false, r.send(b, &answer{kind: ansSingle})
	case comFieldList:
		return false, r.send(b, &answer{kind: ansFieldList, c: c})
	case comProcessInfo:
		return false, r.send(b, &answer{kind: ansResults, c: c, done: true})
	case comProcessKill:
		if c == nil {
			return false, r.malformed("COM_PROCESS_KILL")
		}
		return false, r.send(b, &answer{kind: ansSingle, c: c, done: true})
	case comInitDB, comShutdown, comCreateDB, comDropDB:
		return false, r.send(b, &answer{kind: ansSingle, c: c, done: true})
	case comPing, comStatistics, comSetOption:
		return false, r.send(b, &answer{kind: ansSingle})
	case comResetConnection:
		// The server forgets the session's prepared statements.
		clear(r.stmts)
		return false, r.send(b, &answer{kind: ansSingle})
	case comChangeUser:
		return r.changeUser(b)
	case comBinlogDump, comBinlogDumpGTID, comRegisterSlave, comTableDump:
		// Allowed, it is refused too: a replication stream cannot be
		// decoded, and the proxy never relays one.
		r.fail(codeDenied, stateDenied, "sluice: replication streams are not relayed")
		return false, nil
	}
	r.fail(codeUnknownCom, stateHandshake, fmt.Sprintf("sluice: command 0x%02x is not relayed", b[0]))
	return false, nil
}

// decideCmd decides the command b as the statement it stands for, without
// waiting on a hold; nil for the commands that are not decided themselves
// (an execution is decided at its prepare) and for malformed ones.
func (r *relay) decideCmd(b []byte) *decoder.Command {
	switch b[0] {
	case comQuery, comStmtPrepare:
		return r.decideText(string(b[1:]))
	case comInitDB:
		// The same as USE db, and decided as such.
		return r.decideText("USE " + quoteIdent(string(b[1:])))
	case comFieldList:
		table, _, _ := cstring(append(b[1:len(b):len(b)], 0))
		return r.decideText("SHOW COLUMNS FROM " + quoteIdent(string(table)))
	case comProcessInfo:
		return r.decideText("SHOW PROCESSLIST")
	case comProcessKill:
		if len(b) < 5 {
			return nil
		}
		return r.decideText("KILL " + strconv.FormatUint(uint64(le32(b[1:])), 10))
	case comShutdown:
		return r.decideText("SHUTDOWN")
	case comCreateDB:
		return r.decideText("CREATE DATABASE " + quoteIdent(string(b[1:])))
	case comDropDB:
		return r.decideText("DROP DATABASE " + quoteIdent(string(b[1:])))
	case comBinlogDump, comBinlogDumpGTID, comRegisterSlave, comTableDump:
		// A request for the binary log (or a table dump).
		names := map[byte]string{comBinlogDump: "COM_BINLOG_DUMP", comBinlogDumpGTID: "COM_BINLOG_DUMP_GTID",
			comRegisterSlave: "COM_REGISTER_SLAVE", comTableDump: "COM_TABLE_DUMP"}
		return r.decide("<"+names[b[0]]+">", ruleset.Statement{Kind: KindReplication, Flags: []string{FlagBinlogDump}}, nil)
	}
	return nil
}

// send sends the client's command b to the server and expects its answer
// a.
func (r *relay) send(b []byte, a *answer) error {
	if err := r.forward(b); err != nil {
		return err
	}
	r.expect(a)
	return nil
}

// changeUser relays a COM_CHANGE_USER: a new login on the same
// connection, as another database user. The flow's identity (its
// process, its CI job) and so its policies stay what they are; the new
// user is logged and noted in the recording, and the login is relayed
// as the first one was (authenticate). Like the first login, it is left
// out of the wire recording: the packet and the client's answers carry
// the password's proof (the run loop does not record a COM_CHANGE_USER,
// and authenticate reads the answers without recording them); what the
// client is sent (nonces, the server's OK) is recorded as written. The
// server forgets the session's prepared statements, and so does the
// proxy. It is refused, and the session ended, where the proxy logged in
// with an injected credential: the client holds no password to change
// with. done is set when the session ends.
func (r *relay) changeUser(b []byte) (done bool, err error) {
	if r.s.injected() {
		clear(b)
		r.fail(codeHandshake, stateHandshake, "sluice: COM_CHANGE_USER is not relayed here (the session logged in with a credential Sluice injected); open a new connection as the other user")
		return true, nil
	}
	user, _, err := cstring(b[1:])
	if err != nil {
		r.fail(codeHandshake, stateHandshake, "sluice: a malformed COM_CHANGE_USER")
		return true, &ProtocolError{Msg: "a malformed COM_CHANGE_USER"}
	}
	newUser, oldUser := string(user), r.s.user
	err = r.forward(b)
	clear(b)
	if err != nil {
		return true, err
	}
	clear(r.stmts)
	if err := r.s.authenticate(r.cr, r.cw, r.sr, r.sw, 0); err != nil {
		r.s.p.Log.Info("COM_CHANGE_USER refused by the server; session ended", "db_user", oldUser, "new_db_user", newUser, "error", err)
		return true, nil
	}
	r.s.cconn.SetReadDeadline(time.Time{})
	r.s.up.SetReadDeadline(time.Time{})
	r.s.user = newUser
	r.s.p.Log.Info("COM_CHANGE_USER: the session goes on as another database user", "db_user", oldUser, "new_db_user", newUser)
	r.s.p.Session.Record(record.Metadata, record.Event{Type: record.TypeNote,
		Reason: fmt.Sprintf("COM_CHANGE_USER: the session goes on as database user %q (was %q)", newUser, oldUser)})
	return false, nil
}

// classify classifies text in the session's dialect. A text that lexes
// differently under the settings a session can change without the proxy
// seeing it at once (sql_mode's NO_BACKSLASH_ESCAPES, which the server's
// status tells only after the statement that set it, and ANSI_QUOTES,
// which no status tells) is refused: the parts of a string or a quoted
// name, and so of an executable comment, would be the server's to choose.
func (r *relay) classify(text string) (ruleset.Statement, error) {
	d := r.s.dialect
	st, err := r.s.p.Classify(d, text)
	if err != nil || !strings.ContainsAny(text, "\\\"") {
		return st, err
	}
	for _, alt := range []Dialect{
		{MariaDB: d.MariaDB, Version: d.Version, NoBackslashEscapes: !d.NoBackslashEscapes, ANSIQuotes: d.ANSIQuotes},
		{MariaDB: d.MariaDB, Version: d.Version, NoBackslashEscapes: d.NoBackslashEscapes, ANSIQuotes: !d.ANSIQuotes},
		{MariaDB: d.MariaDB, Version: d.Version, NoBackslashEscapes: !d.NoBackslashEscapes, ANSIQuotes: !d.ANSIQuotes},
	} {
		st2, err := r.s.p.Classify(alt, text)
		if err != nil || !sameStatement(st, st2) {
			return ruleset.Statement{}, errors.New("the statement reads differently under another sql_mode (NO_BACKSLASH_ESCAPES or ANSI_QUOTES): its quoting is ambiguous")
		}
	}
	return st, nil
}

// sameStatement reports whether two classifications decide alike.
func sameStatement(a, b ruleset.Statement) bool {
	return a.Kind == b.Kind && a.HasWhere == b.HasWhere && a.HasLimit == b.HasLimit &&
		slices.Equal(a.Tables, b.Tables) && slices.Equal(a.Functions, b.Functions) && slices.Equal(a.Flags, b.Flags)
}

// decide makes the command of text and its classification and decides
// it. The caller waits on a hold (AwaitHold), then refuses it when
// Blocked.
func (r *relay) decide(text string, st ruleset.Statement, err error) *decoder.Command {
	if err == nil {
		st.Text = text
	}
	c := &decoder.Command{Cmd: enforcer.Command{Text: text, Statement: st, ClassifyErr: err}}
	r.s.decider.Decide(c)
	return c
}

// decideText classifies text and decides it (decide).
func (r *relay) decideText(text string) *decoder.Command {
	st, err := r.classify(text)
	return r.decide(text, st, err)
}

// forward sends a client packet to the server as a new exchange.
func (r *relay) forward(b []byte) error {
	r.sw.seq = 0
	if err := r.sw.write(b); err != nil {
		return err
	}
	return r.sw.flush()
}

// status notes a server status: the session's NO_BACKSLASH_ESCAPES.
func (r *relay) status(st uint16, err error) {
	if err == nil {
		r.s.dialect.NoBackslashEscapes = st&statusNoBackslashEscapes != 0
	}
}

// deny tells the client its command was refused. The server never saw
// it, and the session goes on.
func (r *relay) deny(c *decoder.Command) error {
	d := c.Verdict.Decision
	msg := fmt.Sprintf("sluice: statement denied by rule %q: %s", d.Rule.ID, d.Reason)
	if c.Verdict.Action == ruleset.Hold {
		msg = fmt.Sprintf("sluice: statement needs approval under rule %q, and this session cannot wait for one: denied (%s)", d.Rule.ID, d.Reason)
	}
	r.cw.seq = 1
	if err := r.cw.write(appendErr(nil, codeDenied, stateDenied, msg, true)); err != nil {
		return err
	}
	return r.cw.flush()
}

// fail sends an ERR packet answering the command at hand.
func (r *relay) fail(code uint16, state, msg string) {
	r.cw.seq = 1
	r.cw.write(appendErr(nil, code, state, msg, true))
	r.cw.flush()
}

// malformed refuses a command too short for its fields.
func (r *relay) malformed(name string) error {
	r.fail(codeUnknownCom, stateHandshake, "sluice: a malformed "+name)
	return nil
}

// unknownStmt answers a command about a prepared statement the proxy
// never saw acknowledged, as the server would (ER_UNKNOWN_STMT_HANDLER).
func (r *relay) unknownStmt() error {
	r.fail(1243, "HY000", "sluice: unknown prepared statement handler")
	return nil
}

// stmtOf returns the prepared statement a COM_STMT_* command names.
func (r *relay) stmtOf(b []byte) *stmt {
	if len(b) < 5 {
		return nil
	}
	return r.stmts[le32(b[1:])]
}

// serverErr ends the session on a server-side failure, telling the
// client.
func (r *relay) serverErr(err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		r.fail(codeConnKilled, stateConnKilled, "sluice: the server sent an invalid packet: "+pe.Msg)
	} else if !errClosed(err) {
		r.fail(codeConnKilled, stateConnKilled, "sluice: lost the connection to the server")
	}
	return err
}

// Replication requests' classification.
const (
	KindReplication = "replication"
	FlagBinlogDump  = "binlog_dump"
)

// quoteIdent quotes a name as a MySQL identifier.
func quoteIdent(s string) string { return "`" + strings.ReplaceAll(s, "`", "``") + "`" }

// lexingChanged follows a statement that changes how the server reads the
// session's next statements (flag lexing_change) once it ran. sql_mode's
// switches are covered by classify (every text is read under each); the
// client character set is the one the statement names, read with the
// server's grammar (clientCharset).
func (r *relay) lexingChanged(c *decoder.Command) {
	if c == nil || !hasFlag(c.Cmd.Statement.Flags, FlagLexingChange) {
		return
	}
	if cs, changed := clientCharset(r.s.dialect, c.Cmd.Text); changed {
		r.s.dialect.Charset = cs
	}
}

// injected reports whether the session logged in with a credential
// Sluice injected.
func (s *session) injected() bool { return s.credential != "" }
