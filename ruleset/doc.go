// Package ruleset owns the HCL policy language: the schema, parsing,
// validation with source-ranged diagnostics, compilation and evaluation,
// rule tests, signatures, and the Store that holds the active ruleset.
//
// It does no I/O beyond reading rule files: resolving hostnames, watching
// directories and talking to the kernel belong to the callers.
//
// # The language
//
// A ruleset is every *.hcl file of one directory, in HCL native syntax:
//
//	mode = "enforce"                 # or "monitor"; default enforce
//
//	target "prod-db" {
//	  protocol      = "postgres"     # postgres, mysql, ssh, k8s, tcp
//	  address       = ["10.0.0.5:5432", "10.1.0.0/16:5432", "db.internal:5432-5433", "*:5432"]
//	  upstream_tls  = "verify-full"  # disable, prefer, require, verify-ca, verify-full
//	  upstream_ca   = "/etc/sluice/ca/prod-db.pem" # verify against this CA, not the system roots
//	  resolve_every = "1m"           # how often hostnames are re-resolved
//	  undecoded     = "refuse"       # while not decoded: "refuse" (default) or "relay"
//	  upstream_pool = 4              # postgres with credentials: idle server connections kept per job (default 0)
//	}
//
//	target "deploy" {
//	  protocol    = "ssh"
//	  address     = ["10.0.1.0/24:22"]
//	  known_hosts = "/etc/sluice/known_hosts" # host keys Sluice checks when it logs in
//	  credential "deploy" {                  # see Credential: decoded only with one
//	    user     = "deploy"
//	    key_file = "/etc/sluice/secrets/deploy-key"
//	    policies = ["*"]
//	  }
//	}
//
//	policy "ci-main-readonly" {
//	  targets        = ["prod-db"]   # or ["*"]
//	  when           = identity.repository == "acme/api" && identity.ref == "refs/heads/main"
//	  record         = "commands"    # none, metadata, commands, full
//	  default_action = "deny"        # when no allow or hold block fires; default allow
//
//	  allow { when = contains(["select", "show"], sql.kind) }
//	  deny "no-ddl" {
//	    when   = contains(["drop", "truncate", "alter"], sql.kind)
//	    reason = "schema changes go through migrations"
//	  }
//	  hold "bulk" {
//	    when          = sql.kind == "copy_out" || result.rows > 1000
//	    approvers     = ["group:security"]
//	    min_approvals = 1
//	    timeout       = "15m"
//	  }
//	  mask "pii" {
//	    columns = ["users.email", "*.password_hash"]
//	    detect  = ["email", "card_number", "secret", "employee_id"]
//	    using   = "hash"                # redact, partial, hash, email, null, digits
//	  }
//	}
//
//	detector "employee_id" {         # a custom value detector for detect lists
//	  pattern = "EMP-[0-9]{6}"         # RE2 syntax
//	}
//
//	default {                        # flows no policy matches
//	  action = "deny"                  # or allow; deny without a default block
//	}
//
//	test "main may not drop" {
//	  target      = "prod-db"
//	  identity    = { repository = "acme/api", ref = "refs/heads/main" }
//	  query       = "DROP TABLE users"   # or statement = { kind = "drop", tables = ["users"], flags = [] }
//	  result      = { rows = 10 }        # optional
//	  expect      = "deny"
//	  expect_rule = "ci-main-readonly/deny/no-ddl"
//	}
//
// Every when is a real HCL expression over identity.* (the verified
// token's claims as strings, "" when absent, and identity.level: oidc,
// unverified or none), process.* (pid, uid, gid, exe, comm, cgroup,
// unit), target.* (name, protocol, address, ip, port), result.* (rows,
// bytes) and the protocol facets (see Facets below): sql.* (kind,
// tables, functions, flags, has_where, has_limit, text; see Statements
// below), also written statement.*, its older name, ssh.* and sftp.*
// (see SSH below) and k8s.* (see Kubernetes below); with the functions
// glob, any_glob, all_glob, regex, cidr_contains, anytrue, alltrue,
// contains, length, strlen, lower, upper, concat, join, split,
// trimprefix and trimsuffix. HCL has no "in"
// operator: write contains(list, value). Unknown variables and
// attributes, type errors, non-boolean conditions, invalid literal
// regexes and CIDRs are load-time diagnostics, each with the range to fix,
// and so is a facet on a policy whose targets do not speak it (see
// Facets). A policy's when may use only identity, process and target: it
// is decided once per connection (Match). allow blocks may not use
// result.
//
// # Facets
//
// identity, process, target and result are common to every protocol. A
// facet is a protocol family's own variable: what its decoder reports
// about one command, decided per command (a statement-stage variable,
// like statement.* always was). They are defined in one table
// (facet.go); a protocol adds its facet there:
//
//	facet  protocols        attributes
//	sql    postgres, mysql  kind, tables, functions, flags, has_where, has_limit, text
//	ssh    ssh              user, kind, command, argv, programs, subsystem,
//	                        forward_host, forward_port, env, pty, term
//	sftp   ssh              op, path, target
//	k8s    k8s              verb, resource_request, group, version, resource,
//	                        subresource, namespace, name, path, user_agent,
//	                        object_kind, images, privileged, host_path,
//	                        host_network
//
// statement.* is the older name of sql.*, kept as an alias: the same
// attributes, the same values and the same compiled evaluation, so every
// ruleset written before facets decides as it did, without a warning.
// Write sql.* in new rules. Diagnostics about an attribute name the
// variable as the rule wrote it. A facet is empty (its strings "", its
// lists empty, its numbers 0, its bools false) on every other protocol's
// commands and on connection decisions; on a target whose flows are not
// decoded (see Undecoded protocols) no command is decided at all.
//
// A facet only describes commands on its protocols' targets, so a rule
// (deny, hold, mask or allow) may use one only in a policy that covers
// at least one target of those protocols; targets = ["*"] covers every
// target of the ruleset. Elsewhere it is a load error on the variable,
// because a guard such as target.protocol == "postgres" cannot make the
// facet describe those targets' commands:
//
//	rules.hcl:13:17: error: sql used on a policy without postgres or mysql targets:
//	Policy "p" covers target bastion (ssh). sql.* is filled only on postgres and
//	mysql flows, so on this target it never describes a command, [...] Move the
//	rule to a policy for the postgres or mysql targets, or add them to this
//	policy's targets.
//
// tcp targets are never decoded: their only decision is the connection
// (kind "connect"), which a block without a when decides, so sql.* is an
// error in a policy that covers only tcp targets too. A test block's
// query is classified by the target protocol's decoder (the Classifier
// given to RunTests): into sql.* on postgres and mysql targets, into an
// exec request (ssh.*) on ssh targets, and from a request line ("GET
// /api/v1/secrets") into a Kubernetes API request (k8s.*) on k8s
// targets; a query for a tcp target is a load error. A test's statement = { ... } stays accepted on any
// target, as before facets, ssh = { ... } and sftp = { ... } describe
// an SSH request on an ssh target (see SSH), and k8s = { ... } a
// Kubernetes API request on a k8s target (see Kubernetes).
//
// # Statements
//
// sql.kind is the verb of the most dangerous statement in the text
// (see Statement.Kind); tables and functions list every table touched and
// function called, in CTEs and subqueries too, schema-qualified when
// written so. has_where and has_limit describe that statement; LIMIT ALL
// and LIMIT NULL are no limit. sql.flags (a sorted list, empty for
// most statements) marks what a rule will want to refuse whatever the
// kind. The PostgreSQL classifier sets:
//
//   - dangerous_function: a call of a function that reaches the server's
//     files, programs or other servers: pg_read_file, pg_read_binary_file,
//     pg_ls_dir and the other pg_ls_* directory listings, pg_stat_file,
//     the adminpack pg_file_* and pg_logdir_ls, lo_import, lo_export, and
//     dblink and every dblink_* function, in any schema.
//   - do_block, create_function, create_procedure, create_rule,
//     create_trigger: DO, and CREATE [OR REPLACE] FUNCTION, PROCEDURE,
//     RULE, [CONSTRAINT | EVENT] TRIGGER. The SQL in their bodies (SQL,
//     BEGIN ATOMIC, PL/pgSQL including EXECUTE and FOR ... IN EXECUTE of
//     a string literal, a rule's actions) is classified with them: its
//     kinds compete for sql.kind, so a DROP inside a DO block is a
//     drop, and its tables, functions and flags are the statement's.
//   - event_trigger: CREATE EVENT TRIGGER (with create_trigger).
//   - dynamic_sql: a body whose SQL cannot be read: another language, a
//     PL/pgSQL body that does not parse, or EXECUTE of a computed string.
//   - prepare: SQL-level PREPARE, classified as the statement it
//     prepares (PREPARE p AS DELETE FROM t is a delete on t).
//   - unknown_prepared: EXECUTE of a name the session never prepared, or
//     EXECUTE classified without a session (sluice rules test). EXECUTE
//     of a name the session prepared is classified as what it prepared,
//     without prepare.
//   - copy_program: COPY ... TO or FROM PROGRAM.
//   - copy_file: COPY ... TO or FROM a file on the server (not STDIN or
//     STDOUT).
//   - search_path: a change of search_path, which changes what
//     unqualified table names (and so sql.tables) mean: SET [LOCAL]
//     search_path or SET SCHEMA, set_config('search_path', ...) or any
//     set_config whose setting name is not a literal, ALTER ROLE,
//     DATABASE, SYSTEM or FUNCTION ... SET search_path, and UPDATE of
//     pg_settings. RESET search_path and SET search_path TO DEFAULT return
//     to the configured value and are not flagged.
//
// The MySQL classifier (decoder/mysql; go doc there for the kinds) sets:
//
//   - into_outfile: SELECT ... INTO OUTFILE (kind copy_out).
//   - load_file: a LOAD_FILE call.
//   - dangerous_function: load_file and the lib_mysqludf_sys functions
//     (sys_exec, sys_eval, sys_get, sys_set).
//   - load_data, load_data_local: LOAD DATA INFILE from a server file,
//     or LOCAL from the client's (kind copy_in).
//   - system_variable_write: a write to a GLOBAL or PERSIST variable, or
//     to a session variable other than the ones drivers set as
//     housekeeping.
//   - lexing_change: a change of how the server reads the session's next
//     statements (sql_mode, the client character set).
//   - user_admin: CREATE, ALTER, DROP or RENAME USER or ROLE, GRANT,
//     REVOKE, SET PASSWORD, SET DEFAULT ROLE.
//   - dynamic_sql: SQL-level PREPARE ... FROM and EXECUTE, whose SQL is
//     not known from the text.
//   - replace: REPLACE (kind delete: it deletes the rows it collides
//     with).
//   - server_admin: KILL, FLUSH, SHUTDOWN, RESTART, BINLOG, ALTER
//     INSTANCE.
//   - binlog_dump: a replication request (COM_BINLOG_DUMP and the like),
//     with kind replication.
//
// For example: deny { when = length(sql.flags) > 0 }.
//
// # SSH
//
// An ssh target's flows are decoded when Sluice can log in to its hosts
// itself: the target holds credentials (see Credential; a proxy cannot
// pass the job's own public-key login through) and names in known_hosts
// the file the hosts' keys are checked against. Every request of such a
// session is decided as one command, with ssh.*:
//
//   - kind: shell, exec, subsystem, direct_tcpip (ssh -L, -D, -W,
//     ProxyJump), tcpip_forward (ssh -R), agent_forward or x11.
//   - user: the user name the job asked to log in as (Sluice logs in
//     as the granted credential's user).
//   - command: an exec request's command line, as sent. argv: its words
//     when it is one simple command of literal words, else empty.
//     programs: the base names of every program it runs, as a POSIX
//     shell parses it (each command of a pipeline or list, command
//     substitutions, through wrappers such as env, sudo and sh -c), in
//     order, without duplicates; "?" for a name built by an expansion.
//   - subsystem: a subsystem request's name, such as sftp.
//   - forward_host, forward_port: where a direct_tcpip channel connects
//     from the host, or the address a tcpip_forward asks the host to
//     listen on (a unix socket: its path, and port 0).
//   - env: the names of the environment variables the job asked to set,
//     sorted. pty, term: whether it asked for a terminal, and its type.
//
// Each operation of an sftp subsystem is decided too, with sftp.op (read
// or write for opening a file: write when it may change it, by writing,
// appending, creating or truncating; remove, rename, mkdir, rmdir,
// setstat, symlink, link, list, stat, readlink), sftp.path and sftp.target (the second path
// of a rename, link or symlink); its ssh.kind is subsystem and
// ssh.subsystem sftp, and records show its kind as "sftp". sftp.* is
// empty on every other request, and both facets are empty on other
// protocols' statements. For example:
//
//	deny "tunnels" { when = contains(["direct_tcpip", "tcpip_forward"], ssh.kind) }
//	deny "dumps" {
//	  when = ssh.kind == "exec" && any_glob(["pg_dump*", "mysqldump"], ssh.programs)
//	}
//	deny "releases" { when = sftp.op == "remove" && glob("/srv/releases/*", sftp.path) }
//
// An ssh target without credentials is not decoded: its flows are relayed
// or refused as its undecoded attribute says (see Undecoded protocols).
//
// A test block describes an SSH request with ssh = { kind = "exec",
// command = "...", argv = [...], programs = [...], user = "...", ... }
// (any ssh.* attribute; kind is required) and an SFTP operation with
// sftp = { op = "remove", path = "/srv/x" } (an ssh object beside it may
// set user, env and pty). Both are taken as given, as statement is:
// programs are not derived from command. query = "pg_dump prod" on an
// ssh target is classified instead, as the SSH decoder reads an exec
// command line.
//
// # Kubernetes
//
// A k8s target's flows are requests to a Kubernetes API server, decoded
// when the job's client trusts Sluice's CA (see decoder/k8s; any other
// flow is relayed or refused as the target's undecoded attribute says).
// Each request is decided as one command, resolved as the API server
// itself resolves it (k8s.io/apiserver's RequestInfo), with k8s.*:
//
//   - verb: for a resource request, get, list, watch, create, update,
//     patch, delete or deletecollection (proxy for the API server's old
//     /proxy/ paths); for any other request its HTTP method in lower
//     case (get, post, ...). It is also the request's Statement.Kind.
//   - resource_request: the request names a resource (a path below /api
//     or /apis); false for discovery, /version, /healthz, /openapi and
//     the server's other own paths.
//   - group ("" for the core group), version, resource ("pods",
//     "secrets"), subresource ("exec", "attach", "portforward", "log",
//     "proxy", "eviction", "scale", "status"), namespace ("" for
//     cluster-scoped resources and for requests across all namespaces,
//     kubectl -A), name ("" for lists, watches and creates).
//   - path: the URL path; user_agent: the client's User-Agent.
//   - object_kind: the kind of the object a create, update or patch
//     sends ("Pod", "Deployment"), "" when the body does not say.
//   - images: the container images of the pod spec the body holds (a
//     Pod or a workload's pod template; init and ephemeral containers
//     included), in order, without duplicates.
//   - privileged, host_path, host_network: that pod spec runs a
//     privileged container, mounts a hostPath volume, or uses the host's
//     network.
//
// For example:
//
//	deny "all-secrets" {
//	  when = k8s.resource == "secrets" && k8s.namespace == "" && contains(["list", "watch"], k8s.verb)
//	}
//	hold "exec" {
//	  when      = k8s.resource == "pods" && contains(["exec", "attach", "portforward"], k8s.subresource)
//	  approvers = ["group:sre"]
//	}
//	deny "host-access" { when = k8s.privileged || k8s.host_path || k8s.host_network }
//	deny "foreign-images" {
//	  when = anytrue([for i in k8s.images : !glob("registry.example.com/*", i)])
//	}
//
// A k8s target verifies the API server's certificate (upstream_tls
// defaults to verify-full there) against the system roots, or against
// the CA bundle upstream_ca names, usually the cluster's own CA; postgres
// and mysql targets may name one too, with upstream_tls verify-ca or
// verify-full. Its credentials (see Credential) authenticate Sluice to
// the API server with a bearer token (token_file, token_env,
// token_command) or a client certificate (key_file, key_env,
// key_command: one PEM bundle of the certificate, its chain and its
// private key); k8s_auth, "token" or "client_certificate", says which,
// and defaults from the source.
//
// A test block describes a request with k8s = { verb = "list", resource =
// "secrets", namespace = "ci", ... } (any k8s.* attribute; verb is
// required, and must be one the API server gives such a request: create,
// not post, for a resource), taken as given; resource_request defaults to
// whether a resource is named. query = "GET /api/v1/namespaces/ci/pods" on a k8s
// target is resolved instead, as the API server resolves that request
// line; without a body, object_kind, images and the pod spec's flags
// stay empty.
//
// # Undecoded protocols
//
// A target's protocol may have no decoder in the build that runs it (see
// the daemon's README for which are decoded), or its decoder may be
// unable to decode this target (an ssh target without credentials, see
// SSH). Nothing of such a flow is inspected, so no rule about statements,
// commands or results can fire on it; the flow is still matched by
// policy and default at connect. The target's undecoded attribute says
// what happens then:
//
//   - "refuse", the default: the flow is refused in the protocol's own
//     terms where there is a way to say so before decoding (MySQL: an
//     error packet in place of the greeting; SSH: a disconnect message),
//     otherwise closed, and the daemon logs it at warn with the rule
//     "target/NAME/undecoded". A ruleset that names a protocol expects
//     its rules to apply there; traffic they cannot see is not let
//     through unseen.
//   - "relay": the bytes are relayed unread, as a tcp target's are, and
//     the flow's metadata (process, identity, destination, bytes,
//     duration) is logged and recorded; the log says the flow was not
//     inspected. The embedded default ruleset relays, so installing
//     Sluice never breaks a pipeline by itself (git over ssh included:
//     its ssh target has no credentials).
//
// In monitor mode a refusal is logged and the flow is relayed. tcp
// targets are always relayed and take no undecoded attribute.
//
// # Precedence
//
// Policies apply to a flow when they name its target (or "*") and their
// when holds. Across every applying policy, the strongest firing rule
// decides: deny > hold > mask > allow. No policy can undo another's
// deny, however specific its when: an allow in policy B never lifts a
// deny in policy A. A policy with default_action = "deny" denies what
// none of its own allow or hold blocks permits, and that deny too stands
// against every other policy. When nothing denies or holds, every firing
// mask applies (their specs are all returned), else the statement is
// allowed. When no policy applies, the default block decides (deny if
// there is none). An explicit deny block is reported in preference to a
// policy's default deny; otherwise the first firing rule in file order
// (files sorted by name) is reported. Record levels combine upward: the
// highest of the applying policies' levels and the deciding and masking
// rules' own.
//
// Rule IDs name the deciding rule in decisions, records and tests:
// "policy/deny/label" for a labelled block, "policy/deny[0]" for the
// first unlabelled deny of a policy, "policy/default" for a policy's
// default_action, "default" for the default block.
//
// # Results
//
// A condition that uses result.* is decided, when possible, before the
// statement runs (sql.kind == "copy_out" || result.rows > 1000 holds
// a COPY at once); otherwise it is pending and the Decision says
// AwaitResult: the decoder evaluates again with the Result as rows arrive.
// It need not do so on every row: when every use of result.rows and
// result.bytes in the matched rules is a comparison with a constant number,
// the decision can only change where a counter crosses one of those
// constants, and Match.NextResultCheck says at which counts to decide
// again (result.rows > 10000: at row 10001). Any other use of result
// makes every row count.
//
// # Masking
//
// A mask block says what to mask in the results of the statements it
// fires for, and how. Mask blocks do not fire on a connection decision
// (sql.kind connect) or on transaction control (kind transaction:
// BEGIN, COMMIT, ROLLBACK, SAVEPOINT): they bring back no data, so their
// verdict is what the deny, hold and allow rules say. columns lists column patterns: "column",
// "table.column" or "schema.table.column", each part a glob (* and ?, \
// escapes), so "*.password_hash" and "public.users.*_token" work; a part
// left out matches anything. detect lists value detectors, which look
// for sensitive values wherever they appear: in every column no column
// pattern masks (including expressions such as lower(email), whose origin
// is lost), in COPY exports, and in the message, detail and hint of
// errors and notices. The built-in detectors are email, card_number
// (Luhn-checked), ssn (US), iban (mod-97 checked), phone, jwt,
// aws_access_key, private_key (PEM blocks), secret (high-entropy tokens)
// and ip_address; a top-level detector "name" { pattern = "RE2" } block
// adds one. Its pattern is compiled at load, must not match empty text,
// and its name must not be a built-in one.
//
// On k8s targets a mask's columns name fields of what the API server
// sends back, as "resource.field": the values of a Secret's data and
// stringData are the columns secrets.data and secrets.stringData, a
// ConfigMap's data and binaryData values configmaps.data and
// configmaps.binaryData, a pod's log text pods.log and the values of a
// pod spec's env pods.env; detectors apply to all of them. The default
// ruleset masks secrets.data and secrets.stringData and runs the
// database mask's detectors on the rest. exec, attach, portforward and
// proxy carry byte streams rather than API objects, which a mask may not
// be able to rewrite: the default ruleset scopes its k8s mask away from
// them.
//
// On ssh targets a mask applies its detectors to the output of an exec
// without a terminal, line by line (columns mean nothing there). A shell,
// a terminal or a subsystem (SFTP included) that a mask fires on is
// refused, since its bytes cannot be rewritten safely: in a policy that
// covers ssh targets, scope masks with when = contains(["postgres",
// "mysql"], target.protocol), as the default ruleset does.
//
// using names the function applied to a masked value or a detected span:
//
//   - redact (default): replacement, default "[REDACTED]".
//   - partial: keep the last keep characters (default 4), star the rest.
//   - hash: a keyed HMAC of the value, stable across sessions so joins
//     still line up; the key lives in the daemon's data directory.
//   - email: keep the domain, replace the local part with a keyed hash.
//   - null: send SQL NULL (a detected span in a message is redacted).
//   - digits: replace each digit and letter with a keyed pseudo-random one
//     of the same kind, keeping length and format.
//
// keep may only be set with partial and replacement only with redact. When
// several column patterns of the firing masks match one column, the most
// specific wins (see enforcer/mask for the exact order). In monitor mode
// nothing is masked; what would have been is reported.
//
// # Monitor mode
//
// With mode = "monitor" every Decision is computed, logged and recorded as
// usual but carries Monitor; Enforced returns Allow, so nothing is
// blocked, masked or held. Rule tests check the computed Action.
//
// # Evaluation
//
// Expressions are compiled once per load into Go closures over the Input
// (HCL's own evaluator remains for the constructs the compiler does not
// cover, such as for expressions). An evaluation error fails closed: the
// Decision is Deny and carries Err.
//
// # Signing
//
// A signed ruleset directory holds ruleset.sig, the base64 ed25519
// signature of Digest over its *.hcl files; key files hold base64 raw
// ed25519 keys (see SignatureFile).
package ruleset
