package decoder

import "github.com/sluicehq/sluice/enforcer"

// SessionStats are what a decoded database session reports when it
// ends, for its flow log line.
type SessionStats struct {
	BytesFromClient, BytesToClient int64
	// User and Database are the database user and database of the login
	// (the credential's user when one was injected).
	User, Database string
	// ClientUser is the user the client named when a credential was
	// injected in its place, and Credential that credential's name.
	ClientUser, Credential string
	ClientTLS, UpstreamTLS bool
	// RelayCore says where the session's steady state ran, for protocols
	// that can run on the relay core: "io_uring", "goroutines", or
	// "io_uring, then goroutines: WHY" for one that left the core.
	RelayCore string
	// UpstreamPool says, on targets that pool server connections, whether
	// the session's was new or reused and whether it went back to the
	// pool ("new, released", "reused, closed: WHY").
	UpstreamPool string
}

// Result is the flow's Result: the session's byte counts and err, and
// the flow log's fields: db_user, database, the statements sess decided
// and denied, client_tls and upstream_tls, credential and client_user
// when a credential was injected, relay_core and upstream_pool when set,
// then extra.
func (st SessionStats) Result(sess *enforcer.Session, err error, extra ...any) Result {
	statements, denied := sess.Counts()
	fields := []any{"db_user", st.User, "database", st.Database, "statements", statements, "denied", denied,
		"client_tls", st.ClientTLS, "upstream_tls", st.UpstreamTLS}
	if st.Credential != "" {
		fields = append(fields, "credential", st.Credential, "client_user", st.ClientUser)
	}
	if st.RelayCore != "" {
		fields = append(fields, "relay_core", st.RelayCore)
	}
	if st.UpstreamPool != "" {
		fields = append(fields, "upstream_pool", st.UpstreamPool)
	}
	return Result{BytesFromClient: st.BytesFromClient, BytesToClient: st.BytesToClient, Err: err, Fields: append(fields, extra...)}
}
