// Package e2e holds Sluice's end-to-end tests: the real sluiced and sluice
// binaries, eBPF hooks on cgroups the tests create, real servers
// (PostgreSQL, sshd, a local OIDC issuer) on loopback or in test network
// namespaces, and real clients (psql, pgbench, pgx, mariadb, ssh, git).
// They need root; without it they skip, and with SLUICE_E2E=required (CI)
// they fail instead. TestDemo runs the README's demo.
package e2e
