package mysql

import (
	"fmt"
	"strconv"
	"strings"
)

// Capability flags (the client's and the server's).
const (
	capLongPassword     = 1 << 0 // MariaDB: clear means "the peer is MariaDB" (CLIENT_MYSQL)
	capFoundRows        = 1 << 1
	capLongFlag         = 1 << 2
	capConnectWithDB    = 1 << 3
	capNoSchema         = 1 << 4
	capCompress         = 1 << 5
	capODBC             = 1 << 6
	capLocalFiles       = 1 << 7
	capIgnoreSpace      = 1 << 8
	capProtocol41       = 1 << 9
	capInteractive      = 1 << 10
	capSSL              = 1 << 11
	capIgnoreSigpipe    = 1 << 12
	capTransactions     = 1 << 13
	capReserved         = 1 << 14
	capSecureConnection = 1 << 15
	capMultiStatements  = 1 << 16
	capMultiResults     = 1 << 17
	capPSMultiResults   = 1 << 18
	capPluginAuth       = 1 << 19
	capConnectAttrs     = 1 << 20
	capPluginAuthLenenc = 1 << 21
	capExpiredPasswords = 1 << 22
	capSessionTrack     = 1 << 23
	capDeprecateEOF     = 1 << 24
)

// capsUnderstood are the capabilities whose framing this decoder reads;
// every other one is withdrawn from the server's greeting, and a client
// that asks for one anyway is refused. Among those withdrawn:
// compression (CLIENT_COMPRESS, zstd), so that no packet goes by
// undecoded; CLIENT_DEPRECATE_EOF, optional result metadata and query
// attributes, which change how results and commands are framed; and
// MariaDB's extended capabilities (progress reports, bulk execution,
// cached and extended metadata), whose field sits in the greeting's
// reserved bytes and is cleared there. CLIENT_LOCAL_FILES passes: the
// server's request for a client file is relayed only for an allowed LOAD
// DATA LOCAL INFILE naming that same file (localInfile).
const capsUnderstood = capLongPassword | capFoundRows | capLongFlag | capConnectWithDB | capNoSchema |
	capODBC | capLocalFiles | capIgnoreSpace | capProtocol41 | capInteractive | capSSL | capIgnoreSigpipe |
	capTransactions | capReserved | capSecureConnection | capMultiStatements | capMultiResults |
	capPSMultiResults | capPluginAuth | capConnectAttrs | capPluginAuthLenenc | capExpiredPasswords |
	capSessionTrack

// capsFraming are the withdrawn capabilities that change how packets are
// framed or read: a client that asks for one the greeting did not offer
// is refused, since it would send what the proxy cannot decode.
const capsFraming = capCompress | capDeprecateEOF | 1<<25 | 1<<26 | 1<<27 | 1<<28 | 1<<29

// capNames names the capabilities the decoder withdraws, for the error a
// client that asks for one anyway gets.
var capNames = map[uint32]string{
	capCompress: "CLIENT_COMPRESS", capLocalFiles: "CLIENT_LOCAL_FILES", capDeprecateEOF: "CLIENT_DEPRECATE_EOF",
	1 << 25: "CLIENT_OPTIONAL_RESULTSET_METADATA", 1 << 26: "CLIENT_ZSTD_COMPRESSION_ALGORITHM",
	1 << 27: "CLIENT_QUERY_ATTRIBUTES", 1 << 28: "MULTI_FACTOR_AUTHENTICATION", 1 << 29: "CLIENT_CAPABILITY_EXTENSION",
	1 << 30: "CLIENT_SSL_VERIFY_SERVER_CERT", 1 << 31: "CLIENT_REMEMBER_OPTIONS",
}

// Commands.
const (
	comQuit             = 0x01
	comInitDB           = 0x02
	comQuery            = 0x03
	comFieldList        = 0x04
	comCreateDB         = 0x05
	comDropDB           = 0x06
	comShutdown         = 0x08
	comStatistics       = 0x09
	comProcessInfo      = 0x0a
	comProcessKill      = 0x0c
	comPing             = 0x0e
	comChangeUser       = 0x11
	comBinlogDump       = 0x12
	comTableDump        = 0x13
	comRegisterSlave    = 0x15
	comStmtPrepare      = 0x16
	comStmtExecute      = 0x17
	comStmtSendLongData = 0x18
	comStmtClose        = 0x19
	comStmtReset        = 0x1a
	comSetOption        = 0x1b
	comStmtFetch        = 0x1c
	comBinlogDumpGTID   = 0x1e
	comResetConnection  = 0x1f
)

// Server status flags, in OK and EOF packets.
const (
	statusMoreResults        = 0x0008
	statusCursorExists       = 0x0040
	statusNoBackslashEscapes = 0x0200
)

// Column types.
const (
	typeDecimal    = 0x00
	typeTiny       = 0x01
	typeShort      = 0x02
	typeLong       = 0x03
	typeFloat      = 0x04
	typeDouble     = 0x05
	typeNull       = 0x06
	typeTimestamp  = 0x07
	typeLongLong   = 0x08
	typeInt24      = 0x09
	typeDate       = 0x0a
	typeTime       = 0x0b
	typeDatetime   = 0x0c
	typeYear       = 0x0d
	typeNewDate    = 0x0e
	typeVarchar    = 0x0f
	typeBit        = 0x10
	typeTimestamp2 = 0x11
	typeDatetime2  = 0x12
	typeTime2      = 0x13
	typeJSON       = 0xf5
	typeNewDecimal = 0xf6
	typeEnum       = 0xf7
	typeSet        = 0xf8
	typeTinyBlob   = 0xf9
	typeMediumBlob = 0xfa
	typeLongBlob   = 0xfb
	typeBlob       = 0xfc
	typeVarString  = 0xfd
	typeString     = 0xfe
	typeGeometry   = 0xff
)

// Error codes and SQL states of the errors Sluice sends.
const (
	// codeDenied is ER_SPECIFIC_ACCESS_DENIED_ERROR: what a server sends
	// for a statement its privileges refuse. SQLSTATE 42000.
	codeDenied  = 1227
	stateDenied = "42000"
	// codeHandshake is ER_HANDSHAKE_ERROR ("Bad handshake"), for a
	// login the proxy cannot relay. SQLSTATE 08S01.
	codeHandshake  = 1043
	stateHandshake = "08S01"
	// codeUnknownCom is ER_UNKNOWN_COM_ERROR, for a command the proxy
	// does not relay. SQLSTATE 08S01.
	codeUnknownCom = 1047
	// codeConnLost is CR_SERVER_LOST's server-side kin,
	// ER_CONNECTION_KILLED, for a session that ends. SQLSTATE 70100.
	codeConnKilled  = 1927
	stateConnKilled = "70100"
	// codeQueryInterrupted is ER_QUERY_INTERRUPTED, for a result stopped
	// mid-stream. SQLSTATE 70100.
	codeQueryInterrupted = 1317
)

// appendErr appends an ERR packet's payload: 0xff, the code, and with
// CLIENT_PROTOCOL_41 a '#' and the SQL state, then the message (cut to
// what clients keep).
func appendErr(b []byte, code uint16, state, msg string, protocol41 bool) []byte {
	if len(msg) > maxMessage {
		msg = msg[:maxMessage]
	}
	b = append(b, 0xff, byte(code), byte(code>>8))
	if protocol41 {
		b = append(append(b, '#'), state...)
	}
	return append(b, msg...)
}

// errPacket is a parsed ERR packet.
type errPacket struct {
	code  uint16
	state string
	msg   []byte
}

// parseErr reads an ERR packet's payload (0xff first).
func parseErr(b []byte) errPacket {
	var e errPacket
	if len(b) < 3 {
		return e
	}
	e.code = le16(b[1:])
	rest := b[3:]
	if len(rest) >= 6 && rest[0] == '#' {
		e.state = string(rest[1:6])
		rest = rest[6:]
	}
	e.msg = rest
	return e
}

// okStatus returns the status flags of an OK packet's payload (0x00 or,
// ending a result, 0xfe).
func okStatus(b []byte) (uint16, error) {
	rest := b[1:]
	for i := 0; i < 2; i++ { // affected rows, last insert id
		_, n, _, err := readLenenc(rest)
		if err != nil {
			return 0, err
		}
		rest = rest[n:]
	}
	if len(rest) < 2 {
		return 0, errShort
	}
	return le16(rest), nil
}

// eofStatus returns the status flags of an EOF packet's payload (0xfe,
// warnings, status).
func eofStatus(b []byte) uint16 {
	if len(b) < 5 {
		return 0
	}
	return le16(b[3:])
}

// isEOF reports whether a packet in a result's row stream is its EOF: a
// 0xfe packet shorter than 9 bytes (a row may start with 0xfe, a
// length-encoded string of more than 16 MiB, but is then longer).
func isEOF(b []byte) bool { return len(b) > 0 && b[0] == 0xfe && len(b) < 9 }

// parseServerVersion turns a greeting's server version into the dialect's
// parts: MariaDB sends "5.5.5-10.11.19-MariaDB-..." to old clients, and
// its real version is after the prefix.
func parseServerVersion(v string) (mariaDB bool, version int) {
	mariaDB = strings.Contains(v, "MariaDB")
	v = strings.TrimPrefix(v, "5.5.5-")
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 3 {
		return mariaDB, 0
	}
	nums := [3]int{}
	for i, p := range parts {
		j := 0
		for j < len(p) && p[j] >= '0' && p[j] <= '9' {
			j++
		}
		n, err := strconv.Atoi(p[:j])
		if err != nil {
			return mariaDB, 0
		}
		nums[i] = n
	}
	return mariaDB, nums[0]*10000 + nums[1]*100 + nums[2]
}

// capList names the capabilities in c that the decoder withdraws.
func capList(c uint32) string {
	var names []string
	for bit := uint32(1); bit != 0; bit <<= 1 {
		if c&bit != 0 {
			n := capNames[bit]
			if n == "" {
				n = fmt.Sprintf("0x%x", bit)
			}
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}
