package main

import (
	"encoding/base64"
	"fmt"
	"net/url"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/sluicehq/sluice/decoder/k8s"
	"github.com/sluicehq/sluice/internal/atomicfile"
)

// kubeconfig is the part of a kubeconfig file sluice kubeconfig writes.
type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
}

type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server        string `json:"server"`
		CAData        string `json:"certificate-authority-data"`
		TLSServerName string `json:"tls-server-name"`
	} `json:"cluster"`
}

type namedUser struct {
	Name string            `json:"name"`
	User map[string]string `json:"user"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster   string `json:"cluster"`
		User      string `json:"user"`
		Namespace string `json:"namespace,omitempty"`
	} `json:"context"`
}

// newKubeconfigCmd is `sluice kubeconfig`: a kubeconfig for a runner's
// jobs that reaches a cluster through Sluice's Kubernetes decoder. It
// trusts the daemon's CA and names Sluice's TLS server name, which is how
// the decoder tells a job that trusts it from one that pins the cluster's
// own CA; it holds no credential, since Sluice injects the target's.
func newKubeconfigCmd() *cobra.Command {
	var dir, server, name, namespace, out string
	cmd := &cobra.Command{
		Use:   "kubeconfig",
		Short: "Write a kubeconfig for jobs that reaches a cluster through Sluice (its CA, no credential)",
		Long: `Write a kubeconfig with which a job's kubectl, helm or client-go program
reaches the API server at --server through Sluice's Kubernetes decoder: it
trusts the daemon's CA (data_dir/ca.crt) and sends the TLS server name
` + k8s.ServerName + `, which is how Sluice knows the client trusts it
and decodes the flow. It holds no credential (its user's token is a
placeholder, "` + k8s.PlaceholderToken + `", that Sluice never passes
on): the k8s target's credential block gives Sluice the token or client
certificate it presents for jobs the ruleset grants it to (a target without one passes on the token a job
adds itself, with kubectl --token or its own user entry). Point jobs at it with KUBECONFIG (for example in the runner's .env file).
A job that brings its own kubeconfig, pinning the cluster's CA, is not
decoded: its flows are relayed opaquely or refused, as the target's
undecoded setting says.`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			u, err := url.Parse(server)
			if err != nil || u.Scheme != "https" || u.Host == "" {
				return fmt.Errorf("--server must be the API server's https URL (https://10.0.0.1:6443), got %q", server)
			}
			pemBytes, err := readCA(dir)
			if err != nil {
				return err
			}
			var kc kubeconfig
			kc.APIVersion, kc.Kind, kc.CurrentContext = "v1", "Config", name
			c := namedCluster{Name: name}
			c.Cluster.Server, c.Cluster.CAData, c.Cluster.TLSServerName = server, base64.StdEncoding.EncodeToString(pemBytes), k8s.ServerName
			kc.Clusters = []namedCluster{c}
			user := namedUser{Name: name, User: map[string]string{"token": k8s.PlaceholderToken}}
			kc.Users = []namedUser{user}
			ctx := namedContext{Name: name}
			ctx.Context.Cluster, ctx.Context.User, ctx.Context.Namespace = name, name, namespace
			kc.Contexts = []namedContext{ctx}
			b, err := yaml.Marshal(kc)
			if err != nil {
				return err
			}
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if err := atomicfile.Write(out, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "sluice kubeconfig: wrote %s; jobs use it with KUBECONFIG=%s\n", out, out)
			return nil
		}),
	}
	cmd.Flags().StringVar(&server, "server", "", "the API server's `URL` (https://HOST:PORT), as the job dials it (required)")
	cmd.Flags().StringVar(&name, "name", "sluice", "the `NAME` of the cluster, user and context")
	cmd.Flags().StringVar(&namespace, "namespace", "", "the context's default `NAMESPACE`")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write the kubeconfig to `FILE` (default: standard output)")
	cmd.Flags().StringVar(&dir, "data-dir", defaultDataDir, "the daemon's data `DIR` (its CA)")
	cmd.MarkFlagRequired("server")
	return cmd
}
