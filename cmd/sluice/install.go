package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/spf13/cobra"
	"github.com/zclconf/go-cty/cty"

	"github.com/sluicehq/sluice/interceptor"
	"github.com/sluicehq/sluice/interceptor/runners"
	"github.com/sluicehq/sluice/internal/api"
	"github.com/sluicehq/sluice/internal/atomicfile"
	"github.com/sluicehq/sluice/internal/sshca"
)

// Defaults written into a new config; they are sluiced's own defaults,
// spelled out so the file says where things are.
const (
	installDataDir = "/var/lib/sluice"
	installEvery   = "30s"
)

// installOptions are the flags of `sluice install`.
type installOptions struct {
	root, path      string
	rootSet         bool // --root was given
	dryRun, noStart bool
	// containers: auto, on or off; dockerConfig is Docker's daemon.json;
	// driver its cgroup driver (auto: detect).
	containers, dockerConfig, driver string
	// harden writes the hardening drop-in for each runner unit under
	// systemdDir.
	harden     bool
	systemdDir string
	// ssh (on or off) adds the SSH host CA's @cert-authority line to the
	// known_hosts file sshKnownHosts.
	ssh, sshKnownHosts string
}

func newInstallCmd() *cobra.Command {
	o := &installOptions{}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Find the runner services, write sluiced's config, start sluiced",
		Long: `Find the CI runner services of this host (GitHub Actions, GitLab, Buildkite,
Jenkins, under --root), write their cgroups into sluiced's config so that they
are hooked, create the SSH host CA in the config's data_dir and add its
@cert-authority line to /etc/ssh/ssh_known_hosts (so the runner's ssh
clients accept the host certificates Sluice presents), and, on a host run
by systemd whose packaged unit reads that config, enable and (re)start
sluiced.socket and sluiced.service: one command after the package. Running
it again only adds what is new; an operator's edits to the config and to
the known_hosts file stay.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSSHMode(o.ssh); err != nil {
				return err
			}
			o.rootSet = cmd.Flags().Changed("root")
			if code := install(o, cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				return exitStatus(code)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.root, "root", runners.DefaultRoot, "`DIR` where runner services' cgroups are, relative to the cgroup2 mount")
	cmd.Flags().StringVar(&o.path, "config", packagedConfig, "sluiced's config `FILE` to write")
	cmd.Flags().BoolVar(&o.dryRun, "dry-run", false, "print what would be written, write nothing")
	cmd.Flags().BoolVar(&o.noStart, "no-start", false, "write the config but do not enable or restart sluiced")
	cmd.Flags().StringVar(&o.containers, "containers", "auto", "set up container jobs: `auto` (when Docker is installed), on or off")
	cmd.Flags().StringVar(&o.dockerConfig, "docker-config", defaultDockerConfig, "Docker's daemon.json `FILE`, where install sets cgroup-parent")
	cmd.Flags().StringVar(&o.driver, "cgroup-driver", "auto", "Docker's cgroup `DRIVER`: auto, systemd or cgroupfs")
	cmd.Flags().BoolVar(&o.harden, "harden", false, "also write a systemd drop-in for each runner service so that its jobs cannot become root, move cgroups, call bpf(), load modules or reach Sluice's files")
	cmd.Flags().StringVar(&o.systemdDir, "systemd-dir", defaultSystemdDir, "`DIR` where --harden writes <unit>.d/"+hardenDropIn)
	cmd.Flags().StringVar(&o.ssh, "ssh", "on", "add the SSH host CA's @cert-authority line to the known_hosts file: `on` or off (then sluice ssh-ca prints the line)")
	cmd.Flags().StringVar(&o.sshKnownHosts, "ssh-known-hosts", sshca.DefaultKnownHosts, "the system-wide known_hosts `FILE` the line goes in")
	return cmd
}

// install finds the runner services of the host, writes sluiced's config
// so that their cgroups are hooked, creates the SSH host CA and has the
// known_hosts file trust it and, on a host run by systemd whose packaged
// unit reads that config, enables and (re)starts sluiced.socket and
// sluiced.service. It returns the exit status.
func install(o *installOptions, stdout, stderr io.Writer) int {
	root, path, dryRun, noStart, rootSet := &o.root, &o.path, &o.dryRun, &o.noStart, o.rootSet
	mount, err := interceptor.Cgroup2Mount()
	if err != nil {
		fmt.Fprintln(stderr, "sluice install:", err)
		return 1
	}
	found, err := runners.Find(mount, *root)
	if err != nil {
		fmt.Fprintln(stderr, "sluice install:", err)
		return 1
	}
	if len(found) == 0 {
		fmt.Fprintf(stderr, "sluice install: no CI runner service found under %s (looked for %s).\n"+
			"Install and start the runner first, or point --root at where its service's cgroup is. Nothing was written.\n",
			filepath.Join(mount, *root), strings.Join(runners.Patterns(), ", "))
		return 1
	}
	fmt.Fprintf(stdout, "found %d runner service(s) under %s:\n", len(found), filepath.Join(mount, *root))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  KIND\tUNIT\tCGROUP")
	for _, r := range found {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", r.Kind, r.Unit, r.Cgroup)
	}
	tw.Flush()

	old, err := os.ReadFile(*path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintln(stderr, "sluice install:", err)
		return 1
	}
	exists := err == nil
	if o.harden {
		written, err := installHarden(o.systemdDir, found, *dryRun, stdout)
		if err != nil {
			fmt.Fprintln(stderr, "sluice install: --harden:", err)
			return 1
		}
		reloadHardened(written, found, o.systemdDir, stdout, stderr)
	}
	containersCgroup, err := installContainers(o.containers, o.dockerConfig, o.driver, *dryRun, stdout, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "sluice install:", err)
		return 1
	}
	next, err := mergeInstallConfig(old, *path, found, *root, rootSet || !exists, containersCgroup)
	if err != nil {
		fmt.Fprintln(stderr, "sluice install:", err)
		return 1
	}
	// The CA goes in the data_dir of the config about to be written, and
	// its line in known_hosts before sluiced starts: the daemon loads the
	// same key.
	if err := installSSH(o.ssh, o.sshKnownHosts, *path, next, *dryRun, stdout); err != nil {
		fmt.Fprintln(stderr, "sluice install: ssh:", err)
		return 1
	}
	changed := !exists || !bytes.Equal(old, next)
	switch {
	case !changed:
		fmt.Fprintf(stdout, "config %s unchanged\n", *path)
	case *dryRun:
		fmt.Fprintf(stdout, "would write %s (--dry-run):\n%s", *path, next)
		return 0
	default:
		if err := writeFileAtomic(*path, next); err != nil {
			fmt.Fprintln(stderr, "sluice install:", err)
			return 1
		}
		verb := "wrote"
		if exists {
			verb = "updated"
		}
		fmt.Fprintf(stdout, "%s %s\n", verb, *path)
	}
	fmt.Fprintf(stdout, "protected: connects from these runners' jobs go through Sluice once sluiced runs; runner services started later under %s are found and hooked by the daemon.\n", *root)
	// The packaged unit reads the default path only; a config written
	// elsewhere (a test's, a staging copy) never touches the service.
	if *noStart || *path != packagedConfig || !systemdRunning() {
		fmt.Fprintln(stdout, "next: systemctl enable --now sluiced.socket sluiced.service   (systemctl restart sluiced if it already runs), then sluice doctor")
		return 0
	}
	steps := [][]string{{"systemctl", "enable", "sluiced.socket", "sluiced.service"}, {"systemctl", "start", "sluiced.socket"}}
	if changed {
		// A running daemon takes the new cgroups on restart; the socket
		// unit holds the listener meanwhile, so no connect is refused.
		steps = append(steps, []string{"systemctl", "restart", "sluiced.service"})
	} else {
		steps = append(steps, []string{"systemctl", "start", "sluiced.service"})
	}
	for _, argv := range steps {
		fmt.Fprintf(stdout, "$ %s\n", strings.Join(argv, " "))
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(stderr, "sluice install: %s: %v; see journalctl -u sluiced, and sluice doctor\n", strings.Join(argv, " "), err)
			return 1
		}
	}
	fmt.Fprintln(stdout, "sluiced is running; check it with: sluice doctor")
	return 0
}

// packagedConfig is the config the packaged unit starts sluiced with.
const packagedConfig = "/etc/sluice/sluiced.hcl"

// systemdRunning reports whether systemd manages this host, as
// sd_booted(3) decides it.
func systemdRunning() bool {
	fi, err := os.Stat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// mergeInstallConfig returns the config to write: a new file from the
// template when old is empty, otherwise old with the runners' cgroups
// added to `cgroups` and a discover block added if it has none. Everything
// else in old, comments and hand edits included, is kept byte for byte,
// and old comes back unchanged when it already says all that (so running
// install twice writes nothing the second time). A cgroup an operator
// listed stays listed; install only adds. setRoot also sets the discover
// block's root.
func mergeInstallConfig(old []byte, name string, found []runners.Runner, root string, setRoot bool, containersCgroup string) ([]byte, error) {
	if len(bytes.TrimSpace(old)) == 0 {
		old = []byte(installTemplate)
	}
	// Read the current values with the real parser: hclwrite keeps tokens
	// but does not evaluate them.
	parsed, diags := hclsyntax.ParseConfig(old, name, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, fmt.Errorf("%s is not valid HCL (%s); fix it or move it away, then run install again", name, diags.Error())
	}
	var have []string
	body := parsed.Body.(*hclsyntax.Body)
	if a, ok := body.Attributes["cgroup"]; ok {
		if v, d := a.Expr.Value(nil); !d.HasErrors() && v.Type() == cty.String {
			have = append(have, v.AsString())
		}
	}
	var listed []string
	if a, ok := body.Attributes["cgroups"]; ok {
		v, d := a.Expr.Value(nil)
		if d.HasErrors() || !(v.Type().IsListType() || v.Type().IsTupleType()) {
			return nil, fmt.Errorf("%s: cgroups must be a list of strings", name)
		}
		for it := v.ElementIterator(); it.Next(); {
			_, ev := it.Element()
			if ev.Type() != cty.String {
				return nil, fmt.Errorf("%s: cgroups must be a list of strings", name)
			}
			listed = append(listed, ev.AsString())
		}
	}
	have = append(have, listed...)
	seen := map[string]bool{}
	for _, c := range have {
		seen[strings.Trim(filepath.Clean("/"+c), "/")] = true
	}
	var added []string
	for _, r := range found {
		if !seen[r.Cgroup] {
			seen[r.Cgroup] = true
			added = append(added, r.Cgroup)
		}
	}

	f, wd := hclwrite.ParseConfig(old, name, hcl.InitialPos)
	if wd.HasErrors() {
		return nil, fmt.Errorf("%s is not valid HCL (%s)", name, wd.Error())
	}
	changed := false
	if len(added) > 0 {
		f.Body().SetAttributeRaw("cgroups", listTokens(append(listed, added...)))
		changed = true
	}
	var disc *hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == "discover" {
			disc = b
		}
	}
	if disc == nil {
		f.Body().AppendNewline()
		b := f.Body().AppendNewBlock("discover", nil)
		b.Body().SetAttributeValue("root", cty.StringVal(root))
		b.Body().SetAttributeValue("every", cty.StringVal(installEvery))
		changed = true
	} else if setRoot {
		cur := ""
		if a, ok := disc.Body.Attributes["root"]; ok {
			if v, d := a.Expr.Value(nil); !d.HasErrors() && v.Type() == cty.String {
				cur = v.AsString()
			}
		}
		if cur != root && !(cur == "" && root == runners.DefaultRoot) {
			for _, b := range f.Body().Blocks() {
				if b.Type() == "discover" {
					b.Body().SetAttributeValue("root", cty.StringVal(root))
				}
			}
			changed = true
		}
	}
	if mergeContainersBlock(f, body, containersCgroup) {
		changed = true
	}
	if !changed {
		return old, nil
	}
	return hclwrite.Format(f.Bytes()), nil
}

// listTokens renders a list of strings one per line, so a diff of the
// file shows each runner added.
func listTokens(items []string) hclwrite.Tokens {
	toks := hclwrite.Tokens{{Type: hclsyntax.TokenOBrack, Bytes: []byte("[")}, {Type: hclsyntax.TokenNewline, Bytes: []byte("\n")}}
	for _, it := range items {
		toks = append(toks, hclwrite.TokensForValue(cty.StringVal(it))...)
		toks = append(toks, &hclwrite.Token{Type: hclsyntax.TokenComma, Bytes: []byte(",")}, &hclwrite.Token{Type: hclsyntax.TokenNewline, Bytes: []byte("\n")})
	}
	return append(toks, &hclwrite.Token{Type: hclsyntax.TokenCBrack, Bytes: []byte("]")})
}

// installTemplate is the start of a config install writes from scratch.
var installTemplate = `# sluiced configuration, written by ` + "`sluice install`" + `.
# Running it again adds the runner cgroups it finds to cgroups and the
# discover block if missing; everything else here stays as you edit it.

data_dir   = "` + installDataDir + `"
api_socket = "` + api.DefaultSocket + `"

# Without rules_dir the embedded default ruleset protects every pipeline.
# rules_dir = "/etc/sluice/rules.d"

# The runner services' cgroups, relative to the cgroup2 mount; runner
# services started later are found under discover.root by the daemon.
`

// writeFileAtomic replaces path with data through a temporary file in the
// same directory, keeping the old file's mode (0644 for a new one).
func writeFileAtomic(path string, data []byte) error {
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	if err := atomicfile.Write(path, data, mode); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}
