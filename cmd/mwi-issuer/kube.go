package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/issuer/kuberbac"
)

// kubeRBACCommand returns "kube rbac": the RBAC objects that make
// Kubernetes enforce the roles' kubernetes_resources, printed or applied.
func (e *env) kubeRBACCommand() *cobra.Command {
	var cluster, kubeconfig string
	var apply bool
	return command("rbac", "", "print, or --apply, the RBAC objects that make a cluster enforce the roles' kubernetes_resources",
		func([]string) error { return e.runKubeRBAC(cluster, kubeconfig, apply) },
		func(fs *pflag.FlagSet) {
			fs.StringVar(&cluster, "cluster", "", "kube_cluster `NAME` (required)")
			fs.BoolVar(&apply, "apply", false, "apply the objects through the cluster's API server, and delete those of earlier applies no longer wanted")
			fs.StringVar(&kubeconfig, "kubeconfig", "", "administrator's kubeconfig `FILE` for --apply (its current context)")
			e.adminSocketFlags(fs)
		})
}

// runKubeRBAC gets the cluster's RBAC objects from the running issuer and
// prints them, or applies them with the credentials of kubeconfig.
// Warnings go to standard error, so the manifests alone go to standard
// output, ready for kubectl apply -f or a GitOps repository.
func (e *env) runKubeRBAC(cluster, kubeconfig string, apply bool) error {
	if err := required("cluster", cluster); err != nil {
		return err
	}
	if apply && kubeconfig == "" {
		return cli.Usagef("--apply needs --kubeconfig: the credentials to apply with")
	}
	if !apply && kubeconfig != "" {
		return cli.Usagef("--kubeconfig is for --apply")
	}
	var rbac api.KubeRBAC
	if err := e.admin(http.MethodGet, "/admin/v1/kube/rbac?"+url.Values{"cluster": {cluster}}.Encode(), nil, &rbac); err != nil {
		return err
	}
	for _, w := range rbac.Warnings {
		fmt.Fprintf(e.stderr, "mwi-issuer: warning: %s\n", w)
	}
	if !apply {
		if rbac.Manifests == "" {
			fmt.Fprintf(e.stderr, "mwi-issuer: no role selecting cluster %s has kubernetes_resources: no RBAC objects\n", rbac.Cluster)
		}
		fmt.Fprint(e.stdout, rbac.Manifests)
		return nil
	}
	objs, err := kuberbac.ParseYAML([]byte(rbac.Manifests))
	if err != nil {
		return fmt.Errorf("the issuer's manifests: %w", err)
	}
	client, err := kuberbac.LoadKubeconfig(kubeconfig)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done, err := client.Apply(ctx, objs)
	for _, a := range done {
		fmt.Fprintln(e.stdout, a)
	}
	if err != nil {
		return fmt.Errorf("cluster %s (%s): %w", rbac.Cluster, client.Server, err)
	}
	if len(done) == 0 {
		fmt.Fprintf(e.stdout, "nothing to apply on cluster %s\n", rbac.Cluster)
	}
	return nil
}
