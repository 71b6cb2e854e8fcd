package main

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// nodesCommand returns the "nodes" group: the inventory of the hosts that
// hold host certificates, as tctl nodes lists Teleport's.
func (e *env) nodesCommand() *cobra.Command {
	return group("nodes", "list the hosts that hold SSH host certificates",
		command("ls", "", "list the hosts: names, instance, bot, address, labels, mwid version and last renewal", e.runNodesLs, func(fs *pflag.FlagSet) {
			fs.StringVar(&e.nodesFormat, "format", "text", "output `FORMAT`: text, json or yaml")
			e.adminSocketFlags(fs)
		}),
	)
}

// runNodesLs lists the node inventory.
func (e *env) runNodesLs([]string) error {
	switch e.nodesFormat {
	case "text", "json", "yaml":
	default:
		return cli.Usagef("--format must be text, json or yaml, not %q", e.nodesFormat)
	}
	var nodes api.Nodes
	if err := e.admin(http.MethodGet, "/admin/v1/nodes", nil, &nodes); err != nil {
		return err
	}
	if nodes.Nodes == nil {
		nodes.Nodes = []api.Node{}
	}
	switch e.nodesFormat {
	case "json":
		return writeJSON(e.stdout, nodes)
	case "yaml":
		enc := yaml.NewEncoder(e.stdout)
		enc.SetIndent(2)
		if err := enc.Encode(nodes); err != nil {
			return err
		}
		return enc.Close()
	}
	if len(nodes.Nodes) == 0 {
		fmt.Fprintln(e.stdout, "no nodes")
		return nil
	}
	w := newTable(e.stdout)
	fmt.Fprintln(w, "Host\tInstance\tBot\tAddress\tLabels\tVersion\tLast renewal")
	fmt.Fprintln(w, "----\t--------\t---\t-------\t------\t-------\t------------")
	for _, n := range nodes.Nodes {
		labels := ""
		if len(n.Labels) > 0 {
			labels = sshaccess.FormatLabels(n.Labels)
		}
		version := n.Version
		if version == "" {
			version = "unknown"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strings.Join(n.Names, ","), n.Instance, n.Bot, n.Address, labels, version,
			n.Renewed.UTC().Format(time.RFC3339))
	}
	return w.Flush()
}
