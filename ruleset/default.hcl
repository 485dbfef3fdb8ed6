# Sluice's built-in ruleset. The daemon uses it when its configuration
# names no rules_dir. It intercepts the usual ports on every address,
# refuses destructive SQL, PostgreSQL's escapes to server files,
# programs, other servers (dblink) and search_path, and MySQL's to server
# files, administration and the binary log, holds bulk exports
# for a human, masks secrets and personal data in SQL results, and records
# everything. Its SSH rules refuse port, agent and X11 forwarding and
# database dumps in decoded SSH sessions, and allow shells, commands and
# sftp. Its Kubernetes rules hold exec, attach and port-forward into pods
# for a human, refuse reading secrets across all namespaces and deleting
# namespaces, and mask secret values and secret-looking text in what the
# API server sends back.
#
# It never breaks a pipeline by itself: a target whose flows are not
# decoded (undecoded = "relay") is relayed uninspected, its metadata
# logged and recorded. An operator's ruleset that leaves undecoded out
# refuses such flows instead. Its own ssh target is one: ssh flows are
# decoded only when the operator gives the target credentials (Sluice
# logs in to the host itself) and known_hosts, and this one has neither,
# so git, scp and ssh keep working, relayed opaquely and recorded as
# metadata. With this target its SSH rules decide nothing: they are the
# ones to copy into a ruleset whose ssh targets have credentials.
#
# Its rules read SQL statements through sql.*, the facet of postgres and
# mysql targets (statement.* is its older name, and means the same), SSH
# requests through ssh.*, the facet of ssh targets, and Kubernetes API
# requests through k8s.*, the facet of k8s targets. Like the ssh target,
# the kubernetes one relays the flows it cannot decode: Kubernetes flows
# are decoded when the job's client trusts Sluice's CA (a kubeconfig from
# sluice kubeconfig), and only then do its k8s rules decide them.

mode = "enforce"

target "postgres" {
  protocol = "postgres"
  address  = ["*:5432"]
}

target "mysql" {
  protocol = "mysql"
  address  = ["*:3306"]
}

target "ssh" {
  protocol  = "ssh"
  address   = ["*:22"]
  undecoded = "relay"
}

target "kubernetes" {
  protocol  = "k8s"
  address   = ["*:6443"]
  undecoded = "relay"
}

policy "baseline" {
  targets = ["*"]
  record  = "full"

  deny "destructive-sql" {
    when = contains(["postgres", "mysql"], target.protocol) && (
      contains(["drop", "truncate"], sql.kind) ||
      (contains(["delete", "update"], sql.kind) && !sql.has_where)
    )
    reason = "destructive statements (DROP, TRUNCATE, DELETE or UPDATE without WHERE) are not allowed from CI"
  }

  deny "dangerous-functions" {
    when = target.protocol == "postgres" && (
      contains(sql.flags, "dangerous_function") ||
      contains(sql.flags, "copy_program") ||
      contains(sql.flags, "copy_file") ||
      contains(sql.flags, "search_path")
    )
    reason = "reading server files, running server programs, reaching other servers (dblink) and changing search_path are not allowed from CI"
  }

  deny "mysql-server-access" {
    when = target.protocol == "mysql" && (
      contains(sql.flags, "into_outfile") ||
      contains(sql.flags, "load_file") ||
      contains(sql.flags, "dangerous_function") ||
      contains(sql.flags, "load_data") ||
      contains(sql.flags, "load_data_local") ||
      contains(sql.flags, "server_admin") ||
      contains(sql.flags, "dynamic_sql") ||
      sql.kind == "replication"
    )
    reason = "reading or writing the server's files (INTO OUTFILE, LOAD_FILE, LOAD DATA), server administration (KILL, FLUSH, SHUTDOWN, BINLOG), SQL built at run time (PREPARE ... FROM, EXECUTE) and the binary log (replication) are not allowed from CI"
  }

  deny "code-in-the-database" {
    when = target.protocol == "postgres" && (
      contains(sql.flags, "do_block") ||
      contains(sql.flags, "create_function") ||
      contains(sql.flags, "create_procedure") ||
      contains(sql.flags, "create_rule") ||
      contains(sql.flags, "create_trigger") ||
      contains(sql.flags, "event_trigger") ||
      contains(sql.flags, "dynamic_sql") ||
      contains(sql.flags, "unknown_prepared")
    )
    reason = "DO blocks, new functions, procedures, rules and triggers, SQL built at run time and EXECUTE of statements Sluice never saw prepared are not allowed from CI"
  }

  hold "bulk-export" {
    when = contains(["postgres", "mysql"], target.protocol) && (
      sql.kind == "copy_out" || result.rows > 10000
    )
    approvers = ["group:security"]
    timeout   = "15m"
    reason    = "bulk exports need a security approver"
  }

  deny "ssh-tunnels" {
    when   = target.protocol == "ssh" && contains(["direct_tcpip", "tcpip_forward", "agent_forward", "x11"], ssh.kind)
    reason = "port forwarding (ssh -L, -R, -D, -W, ProxyJump), agent forwarding and X11 are not allowed from CI"
  }

  deny "ssh-database-dumps" {
    when = target.protocol == "ssh" && ssh.kind == "exec" && (
      contains(ssh.programs, "pg_dump") ||
      contains(ssh.programs, "pg_dumpall") ||
      contains(ssh.programs, "mysqldump") ||
      contains(ssh.programs, "mariadb-dump")
    )
    reason = "database dumps are not allowed over SSH, where no SQL rule sees them; connect to the database through a postgres or mysql target instead"
  }

  # Kubernetes: a shell or a tunnel into a running pod reaches past
  # every rule about API objects, so a person looks first.
  hold "k8s-exec" {
    when = target.protocol == "k8s" && k8s.group == "" && k8s.resource == "pods" && (
      contains(["exec", "attach", "portforward"], k8s.subresource)
    )
    approvers = ["group:security"]
    timeout   = "15m"
    reason    = "exec, attach and port-forward into a pod need a security approver"
  }

  # kubectl get secrets -A: every credential of the cluster at once. (A
  # get of one secret always names its namespace.)
  deny "k8s-secrets-all-namespaces" {
    when = target.protocol == "k8s" && (
      k8s.group == "" && k8s.resource == "secrets" && k8s.namespace == "" &&
      contains(["get", "list", "watch"], k8s.verb)
    )
    reason = "reading secrets across all namespaces is not allowed from CI; name the namespace (kubectl -n NAMESPACE)"
  }

  deny "k8s-namespace-deletion" {
    when = target.protocol == "k8s" && (
      k8s.group == "" && k8s.resource == "namespaces" &&
      contains(["delete", "deletecollection"], k8s.verb)
    )
    reason = "deleting namespaces, and everything in them, is not allowed from CI"
  }

  # A Secret's values are masked whole; elsewhere (ConfigMap data, pod
  # logs, pod env values) the detectors mask what looks secret or
  # personal. Not on exec, attach, port-forward and the API server's
  # proxy: their bytes are a stream the mask cannot rewrite, and a mask
  # there would refuse them.
  mask "k8s-secrets-and-personal-data" {
    when = target.protocol == "k8s" && k8s.resource_request && k8s.verb != "proxy" && (
      !contains(["exec", "attach", "portforward", "proxy"], k8s.subresource)
    )
    columns = ["secrets.data", "secrets.stringData"]
    detect  = ["secret", "jwt", "aws_access_key", "private_key", "card_number", "iban", "ssn", "email", "phone"]
    using   = "redact"
  }

  # SQL results only: masking an SSH byte stream would corrupt git
  # packfiles and scp transfers, and on a shell or sftp the mask verdict
  # refuses the request.
  mask "secrets-and-personal-data" {
    when   = contains(["postgres", "mysql"], target.protocol)
    detect = ["secret", "jwt", "aws_access_key", "private_key", "card_number", "iban", "ssn", "email", "phone"]
    using  = "redact"
  }
}

# No flow reaches this, since baseline covers every target, but a ruleset
# always says what happens to the unmatched.
default {
  action = "deny"
  record = "full"
}

test "default denies DROP TABLE" {
  target      = "postgres"
  statement   = { kind = "drop", tables = ["users"] }
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

test "default denies DELETE without WHERE" {
  target      = "mysql"
  statement   = { kind = "delete", tables = ["orders"], has_where = false }
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

test "default denies LOAD_FILE on MySQL" {
  target      = "mysql"
  query       = "SELECT LOAD_FILE('/etc/passwd')"
  expect      = "deny"
  expect_rule = "baseline/deny/mysql-server-access"
}

test "default denies LOAD_FILE hidden in a MariaDB executable comment" {
  target      = "mysql"
  query       = "SELECT 1 /*M! , LOAD_FILE('/etc/passwd') */"
  expect      = "deny"
  expect_rule = "baseline/deny/mysql-server-access"
}

test "default denies SELECT INTO OUTFILE" {
  target      = "mysql"
  query       = "SELECT * FROM users INTO OUTFILE '/tmp/users.csv'"
  expect      = "deny"
  expect_rule = "baseline/deny/mysql-server-access"
}

test "default denies a binlog dump" {
  target      = "mysql"
  statement   = { kind = "replication", flags = ["binlog_dump"] }
  expect      = "deny"
  expect_rule = "baseline/deny/mysql-server-access"
}

test "default denies a MySQL DROP" {
  target      = "mysql"
  query       = "DROP TABLE users"
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

test "default masks a MySQL SELECT" {
  target      = "mysql"
  query       = "SELECT id, email FROM users WHERE id = 1"
  expect      = "mask"
  expect_rule = "baseline/mask/secrets-and-personal-data"
}

test "default holds COPY TO STDOUT" {
  target      = "postgres"
  statement   = { kind = "copy_out", tables = ["users"] }
  expect      = "hold"
  expect_rule = "baseline/hold/bulk-export"
}

test "default holds a large result" {
  target      = "postgres"
  statement   = { kind = "select", tables = ["events"] }
  result      = { rows = 50000 }
  expect      = "hold"
  expect_rule = "baseline/hold/bulk-export"
}

test "default masks an ordinary SELECT" {
  target      = "postgres"
  statement   = { kind = "select", tables = ["users"], has_where = true }
  expect      = "mask"
  expect_rule = "baseline/mask/secrets-and-personal-data"
}

test "default denies pg_read_file" {
  target      = "postgres"
  statement   = { kind = "select", functions = ["pg_catalog.pg_read_file"], flags = ["dangerous_function"] }
  expect      = "deny"
  expect_rule = "baseline/deny/dangerous-functions"
}

test "default denies COPY TO PROGRAM" {
  target      = "postgres"
  statement   = { kind = "copy_out", tables = ["users"], flags = ["copy_program"] }
  expect      = "deny"
  expect_rule = "baseline/deny/dangerous-functions"
}

test "default denies COPY FROM a server file" {
  target      = "postgres"
  statement   = { kind = "copy_in", tables = ["users"], flags = ["copy_file"] }
  expect      = "deny"
  expect_rule = "baseline/deny/dangerous-functions"
}

test "default denies changing search_path" {
  target      = "postgres"
  statement   = { kind = "set", flags = ["search_path"] }
  expect      = "deny"
  expect_rule = "baseline/deny/dangerous-functions"
}

test "default lets other settings through" {
  target      = "postgres"
  statement   = { kind = "set", flags = [] }
  expect      = "mask" # the baseline mask applies to everything allowed
  expect_rule = "baseline/mask/secrets-and-personal-data"
}

test "default denies a DO block" {
  target      = "postgres"
  statement   = { kind = "do", flags = ["do_block"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies creating a function" {
  target      = "postgres"
  statement   = { kind = "create", functions = ["f"], flags = ["create_function"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies creating a procedure" {
  target      = "postgres"
  statement   = { kind = "delete", tables = ["t"], has_where = true, flags = ["create_procedure"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies creating a rule" {
  target      = "postgres"
  statement   = { kind = "delete", tables = ["t", "victim"], has_where = true, flags = ["create_rule"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies creating a trigger" {
  target      = "postgres"
  statement   = { kind = "create", tables = ["t"], flags = ["create_trigger"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies EXECUTE of a name never prepared" {
  target      = "postgres"
  statement   = { kind = "execute", flags = ["unknown_prepared"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies creating an event trigger" {
  target      = "postgres"
  statement   = { kind = "create", flags = ["create_trigger", "event_trigger"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies SQL built at run time" {
  target      = "postgres"
  statement   = { kind = "do", flags = ["do_block", "dynamic_sql"] }
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default lets a PREPARE of an allowed statement through" {
  target      = "postgres"
  statement   = { kind = "select", tables = ["users"], has_where = true, flags = ["prepare"] }
  expect      = "mask"
  expect_rule = "baseline/mask/secrets-and-personal-data"
}

test "default denies a PREPARE of a destructive statement" {
  target      = "postgres"
  statement   = { kind = "delete", tables = ["users"], flags = ["prepare"] }
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

# The same through the classifier (sluice rules test classifies query).

test "default denies DROP inside a DO block's EXECUTE" {
  target      = "postgres"
  query       = "DO $$ BEGIN EXECUTE 'DROP TABLE users'; END $$"
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

test "default denies a SQL function whose body drops" {
  target      = "postgres"
  query       = "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE victim'"
  expect      = "deny"
  expect_rule = "baseline/deny/destructive-sql"
}

test "default denies a harmless DO block" {
  target      = "postgres"
  query       = "DO $$ BEGIN RAISE NOTICE 'hello'; END $$"
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies a computed EXECUTE" {
  target      = "postgres"
  query       = "DO $$ BEGIN EXECUTE 'DROP TABLE ' || 'users'; END $$"
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies a trigger" {
  target      = "postgres"
  query       = "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()"
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies an event trigger" {
  target      = "postgres"
  query       = "CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f()"
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies a rule" {
  target      = "postgres"
  query       = "CREATE RULE r AS ON INSERT TO t DO ALSO NOTIFY t"
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

test "default denies EXECUTE p when p was never prepared" {
  target      = "postgres"
  query       = "EXECUTE p"
  expect      = "deny"
  expect_rule = "baseline/deny/code-in-the-database"
}

# SSH requests, as the SSH decoder reports them where the operator's ssh
# target has credentials (this file's own ssh target relays undecoded).

test "default refuses ssh -L" {
  target      = "ssh"
  ssh         = { kind = "direct_tcpip", forward_host = "db.internal", forward_port = 5432 }
  expect      = "deny"
  expect_rule = "baseline/deny/ssh-tunnels"
}

test "default refuses ssh -R" {
  target      = "ssh"
  ssh         = { kind = "tcpip_forward", forward_host = "localhost", forward_port = 8080 }
  expect      = "deny"
  expect_rule = "baseline/deny/ssh-tunnels"
}

test "default refuses agent forwarding" {
  target      = "ssh"
  ssh         = { kind = "agent_forward" }
  expect      = "deny"
  expect_rule = "baseline/deny/ssh-tunnels"
}

test "default refuses X11 forwarding" {
  target      = "ssh"
  ssh         = { kind = "x11" }
  expect      = "deny"
  expect_rule = "baseline/deny/ssh-tunnels"
}

test "default allows and records an exec" {
  target        = "ssh"
  ssh           = { kind = "exec", user = "deploy", command = "cat /etc/app.conf", argv = ["cat", "/etc/app.conf"], programs = ["cat"] }
  expect        = "allow"
  expect_rule   = "baseline/default"
  expect_record = "full"
}

test "default allows a shell" {
  target      = "ssh"
  ssh         = { kind = "shell", pty = true, term = "xterm-256color" }
  expect      = "allow"
  expect_rule = "baseline/default"
}

test "default allows the sftp subsystem" {
  target      = "ssh"
  ssh         = { kind = "subsystem", subsystem = "sftp" }
  expect      = "allow"
  expect_rule = "baseline/default"
}

test "default allows an sftp upload" {
  target      = "ssh"
  sftp        = { op = "write", path = "/srv/app/release.tar.gz" }
  expect      = "allow"
  expect_rule = "baseline/default"
}

test "default refuses pg_dump over ssh" {
  target      = "ssh"
  query       = "pg_dump prod"
  expect      = "deny"
  expect_rule = "baseline/deny/ssh-database-dumps"
}

test "default refuses a dump piped through ssh" {
  target      = "ssh"
  query       = "sudo -u postgres pg_dumpall | gzip"
  expect      = "deny"
  expect_rule = "baseline/deny/ssh-database-dumps"
}

test "default refuses mysqldump, already classified" {
  target      = "ssh"
  ssh         = { kind = "exec", command = "mysqldump shop", argv = ["mysqldump", "shop"], programs = ["mysqldump"] }
  expect      = "deny"
  expect_rule = "baseline/deny/ssh-database-dumps"
}

# Kubernetes API requests, as the k8s decoder reports them (this file's
# own kubernetes target relays while its flows are not decoded).

test "default holds kubectl exec" {
  target      = "kubernetes"
  k8s         = { verb = "create", resource = "pods", subresource = "exec", namespace = "ci", name = "web-0" }
  expect      = "hold"
  expect_rule = "baseline/hold/k8s-exec"
}

test "default holds kubectl attach" {
  target      = "kubernetes"
  k8s         = { verb = "create", resource = "pods", subresource = "attach", namespace = "ci", name = "web-0" }
  expect      = "hold"
  expect_rule = "baseline/hold/k8s-exec"
}

test "default holds kubectl port-forward" {
  target      = "kubernetes"
  k8s         = { verb = "create", resource = "pods", subresource = "portforward", namespace = "ci", name = "db-0" }
  expect      = "hold"
  expect_rule = "baseline/hold/k8s-exec"
}

test "default refuses kubectl get secrets -A" {
  target      = "kubernetes"
  k8s         = { verb = "list", resource = "secrets", version = "v1", path = "/api/v1/secrets" }
  expect      = "deny"
  expect_rule = "baseline/deny/k8s-secrets-all-namespaces"
}

test "default refuses watching secrets across all namespaces" {
  target      = "kubernetes"
  k8s         = { verb = "watch", resource = "secrets", version = "v1" }
  expect      = "deny"
  expect_rule = "baseline/deny/k8s-secrets-all-namespaces"
}

test "default masks a secret read in its namespace" {
  target      = "kubernetes"
  k8s         = { verb = "get", resource = "secrets", version = "v1", namespace = "ci", name = "registry" }
  expect      = "mask"
  expect_rule = "baseline/mask/k8s-secrets-and-personal-data"
}

test "default refuses kubectl delete namespace" {
  target      = "kubernetes"
  k8s         = { verb = "delete", resource = "namespaces", version = "v1", name = "prod" }
  expect      = "deny"
  expect_rule = "baseline/deny/k8s-namespace-deletion"
}

test "default refuses deleting every namespace" {
  target      = "kubernetes"
  k8s         = { verb = "deletecollection", resource = "namespaces", version = "v1" }
  expect      = "deny"
  expect_rule = "baseline/deny/k8s-namespace-deletion"
}

test "default allows and records kubectl get pods in a namespace" {
  target        = "kubernetes"
  k8s           = { verb = "list", resource = "pods", version = "v1", namespace = "ci", path = "/api/v1/namespaces/ci/pods", user_agent = "kubectl/v1.31.0" }
  expect        = "mask" # allowed: the k8s mask applies to everything read
  expect_rule   = "baseline/mask/k8s-secrets-and-personal-data"
  expect_record = "full"
}

test "default allows a deployment rollout" {
  target      = "kubernetes"
  k8s         = { verb = "patch", group = "apps", version = "v1", resource = "deployments", namespace = "ci", name = "web", object_kind = "Deployment", images = ["registry.example/web:1.2.3"] }
  expect      = "mask"
  expect_rule = "baseline/mask/k8s-secrets-and-personal-data"
}

test "default allows API discovery" {
  target        = "kubernetes"
  k8s           = { verb = "get", path = "/version" }
  expect        = "allow"
  expect_rule   = "baseline/default"
  expect_record = "full"
}

test "default records a kubernetes connection in full" {
  target        = "kubernetes"
  expect        = "allow"
  expect_rule   = "baseline/default"
  expect_record = "full"
}
