package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/internal/testenv"
)

// containerRules denies DROP and masks users.email on the target pg.
func containerRules(addrs ...string) string {
	q := make([]string, len(addrs))
	for i, a := range addrs {
		q[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%s]
}

policy "ci" {
  targets = ["pg"]
  record  = "full"

  deny "no-drop" {
    when   = statement.kind == "drop"
    reason = "schema changes go through migrations"
  }

  mask "pii" {
    columns = ["users.email"]
    using   = "hash"
  }
}
`, strings.Join(q, ", "))
}

// containerEnv is a runner host with container jobs, all made by the
// test: a parent cgroup holding the runner's cgroup and the containers'
// cgroup (the runtime's cgroup parent), a private dockerd putting its
// containers there, a PostgreSQL at an address of this host that
// containers reach through their bridge's gateway, and sluiced hooking
// both cgroups with the containers block.
type containerEnv struct {
	parent, runner, ctrs *testenv.Cgroup
	dk                   *testenv.Docker
	pg                   *testenv.Postgres
	d                    *testenv.Daemon
	image                string
	// proxy4 and proxy6 are the container addresses sluiced puts on lo.
	proxy4, proxy6 netip.Addr
}

// freeAddr picks an address of p that is not local yet, for sluiced to put
// on lo; it is removed from lo at cleanup.
func freeAddr(t *testing.T, p netip.Prefix) netip.Addr {
	t.Helper()
	for range 100 {
		b := p.Addr().As16()
		b[15] = byte(2 + time.Now().UnixNano()%250)
		a := netip.AddrFrom16(b)
		if p.Addr().Is4() {
			a = a.Unmap()
			b4 := a.As4()
			b4[3] = b[15]
			a = netip.AddrFrom4(b4)
		}
		if !testenv.IsLocal(a) {
			t.Cleanup(func() {
				if err := interceptor.RemoveLocalAddr(a); err != nil {
					t.Errorf("remove %s from lo: %v", a, err)
				}
			})
			return a
		}
	}
	t.Fatalf("no free address in %s", p)
	return netip.Addr{}
}

func startContainerEnv(t *testing.T, pgHost netip.Addr, extra string, more ...*testenv.Postgres) *containerEnv {
	t.Helper()
	return startContainerEnvRules(t, pgHost, extra, func(addr string) string {
		addrs := []string{addr}
		for _, pg := range more {
			addrs = append(addrs, pg.Addr())
		}
		return containerRules(addrs...)
	})
}

// startContainerEnvRules is startContainerEnv with the ruleset rules(the
// server's address).
func startContainerEnvRules(t *testing.T, pgHost netip.Addr, extra string, rules func(addr string) string) *containerEnv {
	t.Helper()
	e := &containerEnv{parent: testenv.NewCgroup(t)}
	e.runner = e.parent.Child(t, "runner")
	e.ctrs = e.parent.Child(t, "containers")
	e.dk = testenv.StartDocker(t, testenv.DockerOptions{CgroupParent: e.ctrs.Rel, DefaultBridge: true})
	e.image = e.dk.PsqlImage(t)
	e.pg = testenv.StartPostgres(t, testenv.PostgresOptions{Host: pgHost.String()})
	admin(t, e.pg, `create table users(id int primary key, email text); insert into users values (1, 'ann@example.com');`)
	e.proxy4 = freeAddr(t, netip.MustParsePrefix("198.19.255.0/24"))
	e.proxy6 = freeAddr(t, netip.MustParsePrefix("fdc5:51c3:7e59::/64"))
	body := fmt.Sprintf("containers {\n  cgroup = %q\n  docker_socket = %q\n  address_ipv4 = %q\n  address_ipv6 = %q\n}\n%s",
		e.ctrs.Rel, e.dk.Socket, e.proxy4, e.proxy6, strings.ReplaceAll(extra, "$PARENT", e.parent.Rel))
	e.d = testenv.StartDaemon(t, testenv.DaemonOptions{Cgroup: e.runner, Rules: rules(e.pg.Addr()), Body: body})
	for _, a := range []netip.Addr{e.proxy4, e.proxy6} {
		if !testenv.IsLocal(a) {
			t.Fatalf("sluiced did not put the container address %s on lo", a)
		}
	}
	return e
}

// docker runs the docker client as a job process: inside the runner's
// cgroup. The containers it starts are the runtime's, in the containers
// cgroup.
func (e *containerEnv) docker(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := e.dk.Cmd(ctx, args...)
	f, err := os.Open(e.runner.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(f.Fd())}
	out, err := cmd.CombinedOutput()
	// The private daemon runs without IP forwarding, on purpose: containers
	// reach only this host. docker run warns about it on every container.
	var keep []string
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(line, "WARNING: IPv4 forwarding is disabled") {
			keep = append(keep, line)
		}
	}
	return strings.TrimSpace(strings.Join(keep, "\n")), err
}

// psqlArgs is psql inside the image, verbose so errors carry their SQLSTATE.
func (e *containerEnv) psqlArgs(host string, port int, sql string) []string {
	return []string{"psql", "-X", "-w", "-v", "VERBOSITY=verbose", "-h", host, "-p", fmt.Sprint(port), "-U", e.pg.User, "-d", "postgres", "-Atc", sql}
}

var hash16 = regexp.MustCompile(`^h:[0-9a-f]{16}$`)

// TestContainerJob: a job's `docker run` of psql against PostgreSQL at its
// real address goes through Sluice from the default bridge, a user-defined
// bridge, an IPv6 bridge and the host's network: the DROP is refused with
// 42501, the email comes back masked, the flow log names the container,
// its image and its network namespace, and the recording carries them.
func TestContainerJob(t *testing.T) {
	pg4 := testenv.LocalAddr(t)
	pg6 := testenv.LocalAddr6(t)
	// A second server on an IPv6 address of this host, same rules.
	pgv6 := testenv.StartPostgres(t, testenv.PostgresOptions{Host: pg6.String()})
	admin(t, pgv6, `create table users(id int primary key, email text); insert into users values (1, 'ann@example.com');`)
	e := startContainerEnv(t, pg4, "", pgv6)

	user := e.dk.Network(t, testenv.NetworkOptions{})
	v6 := e.dk.Network(t, testenv.NetworkOptions{IPv6: true})
	for _, tc := range []struct {
		name, network, host string
		port                int
		hostNetns           bool
	}{
		{"default-bridge", "bridge", pg4.String(), e.pg.Port, false},
		{"user-defined", user.Name, pg4.String(), e.pg.Port, false},
		{"ipv6", v6.Name, pg6.String(), pgv6.Port, false},
		{"host-network", "host", pg4.String(), e.pg.Port, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := testenv.RandName("job-")
			run := func(sql string) (string, error) {
				args := []string{"run", "--name", name + "-" + fmt.Sprint(time.Now().UnixNano()%1000000), "--rm", "--network", tc.network, e.image}
				return e.docker(t, append(args, e.psqlArgs(tc.host, tc.port, sql)...)...)
			}
			if out, err := run("select 40 + 2"); err != nil || out != "42" {
				t.Fatalf("psql in a container on %s: %v: %q", tc.network, err, out)
			}
			l := e.d.WaitLog(t, "flow", func(l testenv.LogLine) bool {
				return strings.HasPrefix(l.String("container_name"), name) && l.String("orig_dst") == netip.AddrPortFrom(netip.MustParseAddr(tc.host), uint16(tc.port)).String()
			})
			if id := l.String("container_id"); !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(id) {
				t.Errorf("flow container_id = %q, want the container's id", id)
			}
			if img := l.String("container_image"); img != e.image {
				t.Errorf("flow container_image = %q, want %q", img, e.image)
			}
			if l.String("netns") == "" || l.String("netns") == "0" {
				t.Errorf("flow netns = %q, want the network namespace's inode", l.String("netns"))
			}
			if got := l.String("host_netns"); got != fmt.Sprint(tc.hostNetns) {
				t.Errorf("flow host_netns = %s, want %v", got, tc.hostNetns)
			}
			if got := l.String("identity"); got != "unverified" || !strings.Contains(l.String("identity_reason"), "container "+l.String("container_name")) {
				t.Errorf("flow identity %q (%q): want unverified with a reason naming the container", got, l.String("identity_reason"))
			}

			out, err := run("drop table users")
			if err == nil || !strings.Contains(out, "42501") || !strings.Contains(out, "no-drop") {
				t.Errorf("DROP from the container: err %v, output %q; want 42501 naming no-drop", err, out)
			}
			out, err = run("select email from users")
			if err != nil || !hash16.MatchString(out) {
				t.Errorf("email from the container: %v: %q; want it masked", err, out)
			}
		})
	}
	// A container an operator starts (not from a job: the docker client
	// runs outside the runner's cgroup) is Docker's like any other, in the
	// hooked cgroup parent: intercepted too, by design.
	op := testenv.RandName("operator-")
	if out, err := e.dk.Run(t, append([]string{"run", "--rm", "--name", op, "--network", user.Name, e.image}, e.psqlArgs(pg4.String(), e.pg.Port, "drop table users")...)...); err == nil || !strings.Contains(out, "42501") {
		t.Errorf("an operator's container: %v: %q; want its DROP refused too (every container of the hooked Docker is intercepted)", err, out)
	}

	// The proxy's container address is no way around the hooks: a
	// container's direct connect to it is refused.
	out, err := e.docker(t, append([]string{"run", "--rm", "--network", user.Name, e.image}, e.psqlArgs(e.proxy4.String(), int(e.d.Port), "select 1")...)...)
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("psql from a container straight to the container address %s:%d: %v: %q; want EPERM", e.proxy4, e.d.Port, err, out)
	}
	if n := admin(t, e.pg, "select count(*) from users"); n != "1" {
		t.Errorf("users has %s rows after the denied DROPs, want 1", n)
	}
	st, err := e.d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Kernel["redirected_netns"] < 9 {
		t.Errorf("kernel counters %v: want at least 9 connects redirected from container namespaces", st.Kernel)
	}

	// The recordings carry the container.
	var found bool
	for _, s := range listSessions(t, e.d) {
		if s.Image == e.image && len(s.Container) == 64 {
			found = true
			out, err := e.d.Sluice(t, "sessions", "show", "--socket", e.d.Socket, s.ID)
			if err != nil || !strings.Contains(out, "container.image") || !strings.Contains(out, s.Container) {
				t.Errorf("sessions show %s: %v\n%s\nwant the container's fields", s.ID, err, out)
			}
			break
		}
	}
	if !found {
		t.Errorf("no recording indexed with the container's id and image")
	}
}

// TestContainerSluicedKilled: while sluiced is down (kill -9) a running
// container's connects to the target are refused, never direct; once it is
// back they go through it again.
func TestContainerSluicedKilled(t *testing.T) {
	pg4 := testenv.LocalAddr(t)
	e := startContainerEnv(t, pg4, "")
	net := e.dk.Network(t, testenv.NetworkOptions{})
	name := testenv.RandName("long-")
	if out, err := e.docker(t, "run", "-d", "--name", name, "--network", net.Name, e.image, "sleep", "600"); err != nil {
		t.Fatalf("docker run -d: %v\n%s", err, out)
	}
	exec := func() (string, error) {
		return e.docker(t, append([]string{"exec", name}, e.psqlArgs(pg4.String(), e.pg.Port, "select 7")...)...)
	}
	if out, err := exec(); err != nil || out != "7" {
		t.Fatalf("psql in the running container: %v: %q", err, out)
	}
	e.d.Kill9(t)
	out, err := exec()
	if err == nil || !strings.Contains(out, "Connection refused") {
		t.Fatalf("with sluiced killed, psql in the container: err %v, %q; want connection refused (never a direct connection)", err, out)
	}
	e.d.Start(t)
	if out, err := exec(); err != nil || out != "7" {
		t.Fatalf("psql after sluiced is back: %v: %q", err, out)
	}
	e.d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("container_name") == name })

	// sluice uninstall takes the container addresses off lo with the hooks.
	e.d.Stop(t)
	out, err = e.d.Sluice(t, "uninstall", "--name", e.d.Name)
	if err != nil || !strings.Contains(out, "container address "+e.proxy4.String()+" on lo") {
		t.Errorf("sluice uninstall: %v\n%s\nwant the container addresses removed", err, out)
	}
	for _, a := range []netip.Addr{e.proxy4, e.proxy6} {
		if testenv.IsLocal(a) {
			t.Errorf("container address %s is still on lo after sluice uninstall", a)
		}
	}
}

// TestContainerOutsideHookedCgroup: a container started with a cgroup
// parent of its own (`docker run --cgroup-parent`), outside the hooked
// one, is killed and reported; one under the hooked parent is left alone.
func TestContainerOutsideHookedCgroup(t *testing.T) {
	t.Run("hooked", func(t *testing.T) { testContainerOutside(t, "") })
	// With a scope (jobs with root), the parent holding the runner's and
	// the containers' cgroups carries the hooks, acting for job tasks only:
	// a container elsewhere below it runs no job task, so it is outside
	// too.
	t.Run("scope", func(t *testing.T) { testContainerOutside(t, "scope = \"$PARENT\"\n") })
}

func testContainerOutside(t *testing.T, extra string) {
	pg4 := testenv.LocalAddr(t)
	e := startContainerEnv(t, pg4, extra)
	flee := e.parent.Child(t, "flee")
	stay := testenv.RandName("stay-")
	if out, err := e.docker(t, "run", "-d", "--name", stay, "--network", "none", e.image, "sleep", "600"); err != nil {
		t.Fatalf("docker run -d: %v\n%s", err, out)
	}
	name := testenv.RandName("flee-")
	if out, err := e.docker(t, "run", "-d", "--name", name, "--cgroup-parent", "/"+flee.Rel, "--network", "none", e.image, "sleep", "600"); err != nil {
		t.Fatalf("docker run -d --cgroup-parent: %v\n%s", err, out)
	}
	l := e.d.WaitLog(t, "container outside the hooked cgroups: its connections would not be intercepted", func(l testenv.LogLine) bool {
		return l.String("container_name") == name
	})
	if l.String("killed") != "true" || !strings.HasPrefix(l.String("cgroup"), "/"+flee.Rel+"/") {
		t.Errorf("alert %v: want the container killed, in %s", l, flee.Rel)
	}
	testenv.WaitFor(t, 10*time.Second, "the fleeing container to stop", func() bool {
		out, _ := e.dk.Run(t, "inspect", "-f", "{{.State.Running}}", name)
		return strings.TrimSpace(out) == "false"
	})
	if out, _ := e.dk.Run(t, "inspect", "-f", "{{.State.Running}}", stay); strings.TrimSpace(out) != "true" {
		t.Errorf("the container under the hooked parent: running = %q, want true", out)
	}
	for _, l := range e.d.Logs(t) {
		if l.Message() == "container outside the hooked cgroups: its connections would not be intercepted" && l.String("container_name") == stay {
			t.Errorf("the container under the hooked parent was reported: %v", l)
		}
	}
	st, err := e.d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if c := st.Containers; c == nil || c.Unhooked != 1 || c.RuntimeError != "" || c.Outside != "kill" || c.Cgroup != e.ctrs.Rel {
		t.Errorf("status containers = %+v; want the hooked cgroup, Docker followed, one container found outside and killed", c)
	}
	out, _ := e.d.Sluice(t, "status", "--socket", e.d.Socket)
	if !strings.Contains(out, "containers:  cgroup "+e.ctrs.Rel+" hooked") || !strings.Contains(out, "kill (1 found)") {
		t.Errorf("sluice status:\n%s\nwant the containers line", out)
	}
	// Doctor checks Docker's cgroup-parent against the block, and warns
	// about the container found outside.
	dc := filepath.Join(t.TempDir(), "daemon.json")
	os.WriteFile(dc, []byte(`{"cgroup-parent": "/elsewhere"}`), 0o644)
	out, _ = e.d.Sluice(t, "doctor", "--config", e.d.Config, "--docker-config", dc)
	if !regexp.MustCompile(`(?m)^FAIL  containers .*cgroup-parent is "/elsewhere"`).MatchString(out) {
		t.Errorf("doctor with Docker's cgroup-parent elsewhere:\n%s\nwant a containers FAIL", out)
	}
	os.WriteFile(dc, []byte(`{"cgroup-parent": "/`+e.ctrs.Rel+`"}`), 0o644)
	out, _ = e.d.Sluice(t, "doctor", "--config", e.d.Config, "--docker-config", dc)
	if !regexp.MustCompile(`(?m)^warn  containers .*1 containers were found outside`).MatchString(out) {
		t.Errorf("doctor after a container was found outside:\n%s\nwant a containers warning", out)
	}
}

// TestContainerJobIdentity: a container of a job gets the job's verified
// identity where its environment reaches the job's token (a GitLab docker
// executor's build container with its id_tokens variable; a GitHub job
// container's step, run with docker exec, with the token request
// variables); a container without one is unverified, names itself in the
// reason, and the ruleset's default denies it.
func TestContainerJobIdentity(t *testing.T) {
	is := testenv.NewIssuer(t)
	pg4 := testenv.LocalAddr(t)
	idBody := identityBlock(is, "")
	e := startContainerEnvRules(t, pg4, idBody, func(addr string) string {
		return fmt.Sprintf(`target "pg" {
  protocol = "postgres"
  address  = [%q]
}

policy "acme-main" {
  targets = ["pg"]
  when    = identity.repository == "acme/api" && identity.ref == "refs/heads/main"
}

default {
  action = "deny"
  reason = "only main of acme/api may reach this database"
}
`, addr)
	})
	net := e.dk.Network(t, testenv.NetworkOptions{})
	claims := map[string]any{"aud": "sluice", "sub": "project_path:acme/api:ref_type:branch:ref:main", "repository": "acme/api", "ref": "refs/heads/main", "run_id": "77"}

	// GitLab's docker executor: the job's variables, its ID token among
	// them, are the build container's environment; the runner labels it.
	name := testenv.RandName("gitlab-build-")
	out, err := e.docker(t, append([]string{"run", "--rm", "--name", name, "--network", net.Name,
		"-e", "SLUICE_ID_TOKEN=" + is.Sign(t, claims), "-e", "CI_JOB_ID=77",
		"--label", "com.gitlab.gitlab-runner.job.id=77", "--label", "com.gitlab.gitlab-runner.project.id=12", e.image},
		e.psqlArgs(pg4.String(), e.pg.Port, "select 'verified'")...)...)
	if err != nil || out != "verified" {
		t.Fatalf("GitLab build container with its ID token: %v: %q", err, out)
	}
	l := e.d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("container_name") == name })
	if l.String("identity") != "oidc" || l.String("repository") != "acme/api" || !strings.HasPrefix(l.String("job"), "container:") {
		t.Errorf("GitLab build container's flow: identity %q, repository %q, job %q; want oidc for acme/api", l.String("identity"), l.String("repository"), l.String("job"))
	}
	var found bool
	for _, s := range listSessions(t, e.d) {
		if s.Container != "" && s.IdentityLevel == "oidc" {
			show, _ := e.d.Sluice(t, "sessions", "show", "--socket", e.d.Socket, s.ID)
			found = strings.Contains(show, "com.gitlab.gitlab-runner.job.id") && strings.Contains(show, name)
		}
	}
	if !found {
		t.Errorf("no recording of the GitLab container with its labels and identity")
	}

	// GitHub's job container: the runner starts it, then runs each step
	// in it with docker exec, passing the token request variables.
	is.SetClaims(claims)
	job := testenv.RandName("gh-job-")
	if out, err := e.docker(t, "run", "-d", "--name", job, "--network", net.Name, e.image, "sleep", "600"); err != nil {
		t.Fatalf("docker run -d: %v\n%s", err, out)
	}
	out, err = e.docker(t, append([]string{"exec", "-e", "ACTIONS_ID_TOKEN_REQUEST_URL=" + is.TokenURL(), "-e", "ACTIONS_ID_TOKEN_REQUEST_TOKEN=" + is.RequestToken, job},
		e.psqlArgs(pg4.String(), e.pg.Port, "select 'step'")...)...)
	if err != nil || out != "step" {
		t.Fatalf("GitHub job container's step: %v: %q", err, out)
	}
	l = e.d.WaitLog(t, "flow", func(l testenv.LogLine) bool { return l.String("container_name") == job })
	if l.String("identity") != "oidc" || l.String("repository") != "acme/api" {
		t.Errorf("GitHub step's flow: identity %q, repository %q; want oidc for acme/api", l.String("identity"), l.String("repository"))
	}

	// A docker run from a script step, no token: unverified, denied.
	plain := testenv.RandName("plain-")
	out, err = e.docker(t, append([]string{"run", "--rm", "--name", plain, "--network", net.Name, e.image},
		e.psqlArgs(pg4.String(), e.pg.Port, "select 1")...)...)
	if err == nil || !strings.Contains(out, "only main of acme/api") {
		t.Errorf("a container without a token: %v: %q; want the default's denial", err, out)
	}
	l = e.d.WaitLog(t, "flow denied", func(l testenv.LogLine) bool { return l.String("identity") == "unverified" })
	if r := l.String("identity_reason"); !strings.Contains(r, "container "+plain) || !strings.Contains(r, "no job token") {
		t.Errorf("denied container's identity_reason = %q; want it to name the container and say it has no token", r)
	}
}
