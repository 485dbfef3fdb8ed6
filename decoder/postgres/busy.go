package postgres

import (
	"fmt"
	"net"
)

// codeTooManyConnections is PostgreSQL's SQLSTATE for a server that has
// no connection slot left ("sorry, too many clients already").
const codeTooManyConnections = "53300"

// RefuseBusy answers a client past the daemon's cap on open sessions with
// PostgreSQL's own "too many connections" (FATAL, SQLSTATE 53300), naming
// the cap and its setting, so that libpq and drivers report it as they
// would a full server. It reads the startup packet first (declining TLS
// and GSS encryption, as Refuse does) and gives up after 10 seconds.
// Nothing reaches the server. It closes c.
func RefuseBusy(c net.Conn, limit int) {
	refuseStartup(c, errorBody("FATAL", codeTooManyConnections,
		fmt.Sprintf("sluice: too many sessions through the proxy (max_sessions = %d)", limit),
		"Sluice caps the sessions it serves at once so that its memory stays bounded; this connection came past the cap and never reached the server.",
		"Close idle connections, or raise max_sessions in sluiced's configuration."))
}
