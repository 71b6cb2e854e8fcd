package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/client"
	"github.com/mwi-project/mwi/internal/cli"
)

// kubeconfig prints, or writes to a file, a kubeconfig for the clusters
// mwid holds certificates for. Its users run this mwictl as kubectl's exec
// plugin, unless --embed puts the certificates and keys inline.
func kubeconfig(e *env) error {
	opts := client.KubeconfigOptions{Cluster: e.opts.cluster, ContextTemplate: e.opts.contextTemplate, Embed: e.opts.embed}
	if !e.opts.embed {
		self, err := executable()
		if err != nil {
			return fmt.Errorf("cannot find mwictl's own path for the exec plugin: %w", err)
		}
		opts.Mwictl = self
	}
	cfg, err := e.client.Kubeconfig(e.ctx, opts)
	if err != nil {
		return err
	}
	if e.opts.output == "" {
		if _, err := io.WriteString(e.stdout, cfg); err != nil {
			return err
		}
	} else if err := e.writeOutput(e.opts.output, []byte(cfg), 0o600); err != nil {
		return err
	}
	if e.opts.embed {
		where := "wherever standard output goes"
		if e.opts.output != "" {
			where = e.opts.output
		}
		fmt.Fprintf(e.stderr, "mwictl: warning: this kubeconfig holds the private key inline, which is now on disk (%s); keep it secret, and prefer the exec plugin (no --embed)\n", where)
	}
	return nil
}

// execInfo is the part of KUBERNETES_EXEC_INFO that mwictl reads.
type execInfo struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
}

// kubeCredential prints the ExecCredential for one cluster: kubectl runs it
// as its exec credential plugin and reads the certificate and key from
// standard output. Errors go to standard error, which kubectl shows.
func kubeCredential(e *env) error {
	if e.opts.cluster == "" {
		return cli.Usagef("--cluster is required")
	}
	// kubectl describes the call in KUBERNETES_EXEC_INFO: the version of
	// ExecCredential it reads must be the one printed.
	if info, ok := os.LookupEnv("KUBERNETES_EXEC_INFO"); ok && info != "" {
		var ei execInfo
		if err := json.Unmarshal([]byte(info), &ei); err != nil {
			return fmt.Errorf("KUBERNETES_EXEC_INFO is not the JSON kubectl sends: %v", err)
		}
		if ei.APIVersion != api.ExecCredentialAPIVersion {
			return fmt.Errorf("kubectl asks for an ExecCredential of %s, but mwictl answers %s: set apiVersion: %s in the kubeconfig's exec section (mwictl kubeconfig writes it so)",
				ei.APIVersion, api.ExecCredentialAPIVersion, api.ExecCredentialAPIVersion)
		}
	}
	cred, err := e.client.KubeCredential(e.ctx, e.opts.cluster)
	if err != nil {
		return err
	}
	return json.NewEncoder(e.stdout).Encode(cred)
}

// kubeClusters lists the clusters mwid holds certificates for.
func kubeClusters(e *env) error {
	clusters, err := e.client.KubeClusters(e.ctx)
	if err != nil {
		return err
	}
	if e.opts.json {
		if clusters == nil {
			clusters = []api.KubernetesCluster{}
		}
		return writeJSON(e.stdout, clusters)
	}
	if len(clusters) == 0 {
		fmt.Fprintln(e.stdout, "no Kubernetes clusters: mwid has no kubernetes output, or the issuer's roles allow none of the clusters it selects")
		return nil
	}
	printClusters(e.stdout, clusters, timeNow())
	return nil
}

func printClusters(out io.Writer, clusters []api.KubernetesCluster, now time.Time) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CLUSTER\tSERVER\tUSER\tGROUPS\tEXPIRES")
	for _, c := range clusters {
		groups := strings.Join(c.Groups, ",")
		if groups == "" {
			groups = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Server, c.User, groups, when(c.Expires, now))
	}
	w.Flush()
}
