# Settings of the Sluice daemon (README: "Configuration"). This file is a
# conffile: package upgrades keep your edits.

# The runners' cgroups, relative to the cgroup2 mount. None is named until
# `sluice install` has found the runner services and written them here
# (cgroups = [...] and a discover block that picks up runners registered
# later); until then sluiced refuses to start and says so, so nothing runs
# half-configured.
cgroup = ""

name       = "default"                   # pin directory /sys/fs/bpf/sluice/<name>
proxy_port = 15001                       # the proxy listens on 127.0.0.1 and ::1
data_dir   = "/var/lib/sluice"           # recordings, index, keys
api_socket = "/run/sluice/sluiced.sock"  # local control API, root only

# The ruleset. Left unset, the embedded default ruleset applies (README:
# "The embedded default ruleset"). To use your own, put its *.hcl files in
# /etc/sluice/rules.d/ and uncomment the line below; `sluice rules push`
# then saves pushed rulesets there too.
# rules_dir = "/etc/sluice/rules.d"

# Prometheus metrics at http://127.0.0.1:9464/metrics (loopback only).
metrics_addr = "127.0.0.1:9464"

log {
  level  = "info"  # trace, debug, info, warn, error
  format = "json"  # the journal keeps one JSON object per line
}
