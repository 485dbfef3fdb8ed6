package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/daemon"
	"github.com/sluicehq/sluice/internal/sshca"
)

// The SSH host CA: the SSH decoder presents jobs host certificates signed
// by it, and the runner's ssh clients trust it through an @cert-authority
// line in the system-wide known_hosts file, which `sluice install` writes
// and `sluice uninstall` removes.

// checkSSHMode validates --ssh.
func checkSSHMode(mode string) error {
	if mode != "on" && mode != "off" {
		return usageErrorf("--ssh %q: use on or off", mode)
	}
	return nil
}

// installSSH creates the SSH host CA in the data_dir of conf (the config
// install writes, as bytes; path names it in messages) unless it exists,
// and adds its @cert-authority line for the config's installation to the
// known_hosts file knownHosts. With dryRun it says what it would do and
// creates nothing.
func installSSH(mode, knownHosts, path string, conf []byte, dryRun bool, stdout io.Writer) error {
	if mode == "off" {
		fmt.Fprintf(stdout, "ssh: --ssh off: %s left as it is; ssh clients trust Sluice's host certificates only with the line sluice ssh-ca prints\n", knownHosts)
		return nil
	}
	c, diags, _ := daemon.ParseConfig(path, conf)
	if c == nil {
		return fmt.Errorf("read data_dir from %s: %s; correct the config, or pass --ssh off", path, diags.Error())
	}
	keyPath := filepath.Join(c.DataDir, sshca.KeyFile)
	if dryRun {
		key, err := sshca.Load(keyPath)
		if errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stdout, "ssh: would create the SSH host CA %s and add its @cert-authority line to %s (--dry-run)\n", keyPath, knownHosts)
			return nil
		}
		if err != nil {
			return err
		}
		old, err := os.ReadFile(knownHosts)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		switch _, change := sshca.AddLine(old, c.Name, key.Public().(ed25519.PublicKey)); change {
		case sshca.Added, sshca.Replaced:
			fmt.Fprintf(stdout, "ssh: would add the SSH host CA's @cert-authority line to %s (--dry-run)\n", knownHosts)
		default:
			fmt.Fprintf(stdout, "ssh: %s already trusts Sluice's SSH host CA\n", knownHosts)
		}
		return nil
	}
	key, created, err := sshca.LoadOrCreate(keyPath)
	if err != nil {
		return err
	}
	if created {
		fmt.Fprintf(stdout, "ssh: created the SSH host CA %s\n", keyPath)
	}
	change, err := sshca.AddToFile(knownHosts, c.Name, key.Public().(ed25519.PublicKey))
	if err != nil {
		return err
	}
	switch change {
	case sshca.Added:
		fmt.Fprintf(stdout, "ssh: added the SSH host CA's @cert-authority line to %s: ssh clients on this runner accept the host certificates Sluice presents\n", knownHosts)
	case sshca.Replaced:
		fmt.Fprintf(stdout, "ssh: replaced the older SSH host CA line in %s with the current CA's\n", knownHosts)
	case sshca.Present:
		fmt.Fprintf(stdout, "ssh: %s already trusts Sluice's SSH host CA (through a line install did not write, which uninstall leaves)\n", knownHosts)
	default:
		fmt.Fprintf(stdout, "ssh: %s already trusts Sluice's SSH host CA\n", knownHosts)
	}
	return nil
}

// uninstallSSH removes the @cert-authority line install wrote for the
// installation name from knownHosts. The CA key stays in data_dir, with
// the recordings and the other keys.
func uninstallSSH(mode, knownHosts, name string, stdout io.Writer) error {
	if mode == "off" {
		return nil
	}
	change, err := sshca.RemoveFromFile(knownHosts, name)
	if err != nil {
		return err
	}
	if change == sshca.Removed {
		fmt.Fprintf(stdout, "removed the SSH host CA's @cert-authority line from %s\n", knownHosts)
	}
	return nil
}

// newSSHCACmd is `sluice ssh-ca`: the known_hosts line (or, with --pub,
// the public key) of the SSH host CA, for operators who manage their ssh
// clients' known_hosts themselves. Like `sluice ca`, run as root it
// creates the CA when the data directory has none; otherwise it only
// reads it.
func newSSHCACmd() *cobra.Command {
	var configPath, dir string
	var pubOnly bool
	cmd := &cobra.Command{
		Use:   "ssh-ca",
		Short: "Print the @cert-authority line of the SSH host CA (ssh clients that trust it accept Sluice's host certificates)",
		Long: `Print the known_hosts line that makes ssh clients trust the SSH host CA of
this runner, "@cert-authority * ssh-ed25519 AAAA... sluice-ssh-host-ca". The
proxy presents jobs' ssh clients host certificates signed by this CA.
sluice install adds the line to /etc/ssh/ssh_known_hosts; put it elsewhere
yourself (a user's ~/.ssh/known_hosts, a GlobalKnownHostsFile of your own)
when install runs with --ssh off. With --pub, print the CA's public key
alone. The CA is data_dir/ssh_host_ca, data_dir from --data-dir, else from
the config. Run as root, it creates the CA if there is none yet, as
sluiced does on start.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				var err error
				if dir, err = configDataDir(configPath); err != nil {
					return err
				}
			}
			pub, err := readSSHCA(dir)
			if err != nil {
				return err
			}
			if pubOnly {
				fmt.Fprintln(cmd.OutOrStdout(), sshca.PublicLine(pub))
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), sshca.KnownHostsLine(pub))
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "sluice ssh-ca: ssh clients trust Sluice's host certificates with the @cert-authority line in %s (sluice install adds it) or in a user's ~/.ssh/known_hosts\n", sshca.DefaultKnownHosts)
			return nil
		}),
	}
	cmd.Flags().StringVar(&configPath, "config", packagedConfig, "read data_dir from the daemon's config `FILE`")
	cmd.Flags().StringVar(&dir, "data-dir", "", "the daemon's data `DIR` (default: the config's data_dir)")
	cmd.Flags().BoolVar(&pubOnly, "pub", false, "print the CA's public key alone (authorized_keys form)")
	return cmd
}

// configDataDir returns the data_dir of the daemon's config at path, or
// the default when there is no such file.
func configDataDir(path string) (string, error) {
	src, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return defaultDataDir, nil
	}
	if err != nil {
		return "", fmt.Errorf("read config: %w (or pass --data-dir)", err)
	}
	c, diags, _ := daemon.ParseConfig(path, src)
	if c == nil {
		return "", fmt.Errorf("read data_dir from %s: %s; correct the config, or pass --data-dir", path, diags.Error())
	}
	return c.DataDir, nil
}

// readSSHCA returns the public key of the SSH host CA in dir. Root loads
// (and checks, or creates) it; anyone else can only load it.
func readSSHCA(dir string) (ed25519.PublicKey, error) {
	path := filepath.Join(dir, sshca.KeyFile)
	var key ed25519.PrivateKey
	var err error
	if isRoot() {
		key, _, err = sshca.LoadOrCreate(path)
	} else {
		key, err = sshca.Load(path)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read ssh host ca: no SSH host CA in %s yet: run sluice install (or start sluiced), or run sluice ssh-ca as root", dir)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("read ssh host ca: %s is not readable by this user: run sluice ssh-ca as root", path)
	case err != nil:
		return nil, err
	}
	return key.Public().(ed25519.PublicKey), nil
}
