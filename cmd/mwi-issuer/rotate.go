package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/issuer/ca"
)

// rotateFlags are the flags of ca rotate.
type rotateFlags struct {
	typ, phase string
	force      bool
	format     string
}

// caCommand returns "ca", which prints the authorities, with "ca rotate"
// and "ca rotate status".
func (e *env) caCommand() *cobra.Command {
	c := command("ca", "", "print ca_pin, ssh_user_ca, ssh_host_ca and kube_client_ca_file", e.runCA, func(fs *pflag.FlagSet) {
		fs.StringVar(&e.state, "state", "", "issuer state `DIR` (required)")
	})
	var f rotateFlags
	rotate := command("rotate", "", "move the rotation of an authority to its next phase, as tctl auth rotate --manual does", func([]string) error {
		return e.runCARotate(f)
	}, func(fs *pflag.FlagSet) {
		fs.StringVar(&f.typ, "type", "", "authority `TYPE`: ssh_user, ssh_host, identity, kube, tls, or all (required; the admin CA does not rotate)")
		fs.StringVar(&f.phase, "phase", "", "`PHASE` to go to: init, update_clients, update_servers, standby or rollback (required)")
		fs.BoolVar(&f.force, "force", false, "go to standby even while hosts or bots may still hold certificates from the authority it drops (the old one, or after a rollback the next), or to update_servers of tls while some may lack the next pin")
		fs.StringVar(&f.format, "format", "text", "output `FORMAT`: text, json or yaml")
		e.adminSocketFlags(fs)
	})
	rotate.Long = "Rotate an authority without downtime, in phases:\n\n" +
		"  init            the next authority is made and published beside the current one\n" +
		"  update_clients  the next authority signs; both are trusted\n" +
		"  update_servers  the issuer's serving certificate comes from the next TLS authority too\n" +
		"  standby         the old authority is retired: only the new one is trusted\n" +
		"  rollback        (from init, update_clients or update_servers) the current authority\n" +
		"                  signs again; standby then drops the next one\n\n" +
		"Trust reaches hosts and clients through what mwid writes at its next renewal: wait\n" +
		"until ca rotate status shows no instance behind before each phase. The admin\n" +
		"identity CA does not rotate."
	rotate.AddCommand(command("status", "", "show each authority's phase, fingerprints, and the instances not caught up", func([]string) error {
		return e.runCARotateStatus(f.format)
	}, func(fs *pflag.FlagSet) {
		fs.StringVar(&f.format, "format", "text", "output `FORMAT`: text, json or yaml")
		e.adminSocketFlags(fs)
	}))
	c.AddCommand(rotate)
	return c
}

func (e *env) runCARotate(f rotateFlags) error {
	if err := required("type", f.typ, "phase", f.phase); err != nil {
		return err
	}
	if err := checkFormat(f.format, "text", "json", "yaml"); err != nil {
		return err
	}
	if f.typ != "all" {
		if _, err := ca.ParseType(f.typ); err != nil {
			return cli.Usagef("--type: %v", err)
		}
	}
	var out api.CARotations
	if err := e.admin(http.MethodPost, "/admin/v1/ca/rotate", api.RotateCARequest{Type: f.typ, Phase: f.phase, Force: f.force}, &out); err != nil {
		return err
	}
	return e.printRotations(out, f.format)
}

func (e *env) runCARotateStatus(format string) error {
	if err := checkFormat(format, "text", "json", "yaml"); err != nil {
		return err
	}
	var out api.CARotations
	if err := e.admin(http.MethodGet, "/admin/v1/ca/rotations", nil, &out); err != nil {
		return err
	}
	return e.printRotations(out, format)
}

func (e *env) printRotations(out api.CARotations, format string) error {
	switch format {
	case "json":
		return writeJSON(e.stdout, out)
	case "yaml":
		return writeYAML(e.stdout, out)
	}
	w := newTable(e.stdout)
	fmt.Fprintln(w, "Type\tPhase\tSince\tCurrent\tNext\tNot caught up")
	fmt.Fprintln(w, "----\t-----\t-----\t-------\t----\t-------------")
	for _, r := range out.Rotations {
		since := "-"
		if !r.Since.IsZero() {
			since = r.Since.UTC().Format(time.RFC3339)
		}
		next := r.Next
		if next == "" {
			next = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\n", r.Type, r.Phase, since, r.Current, next, r.NotCaughtUpTotal)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, r := range out.Rotations {
		if r.LoadError != "" {
			fmt.Fprintf(e.stdout, "\n%s: this issuer still uses phase %s: %s\n", r.Type, r.Loaded, r.LoadError)
		}
		if len(r.NotCaughtUp) == 0 {
			continue
		}
		fmt.Fprintf(e.stdout, "\n%s: not caught up since %s (%d):\n", r.Type, r.Since.UTC().Format(time.RFC3339), r.NotCaughtUpTotal)
		for _, c := range r.NotCaughtUp {
			host := ""
			if len(c.Node) > 0 {
				host = " host " + strings.Join(c.Node, ",")
			}
			fmt.Fprintf(e.stdout, "  bot %s instance %s%s: last renewed %s, certificates valid until %s at the latest\n",
				c.Bot, c.Instance, host, c.Renewed.UTC().Format(time.RFC3339), c.Until.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// kubeCACommand returns "kube ca": the bundle of Kubernetes client CAs
// that API servers must trust.
func (e *env) kubeCACommand() *cobra.Command {
	return command("ca", "", "print the Kubernetes client CAs API servers must trust (the --client-ca-file bundle)", func([]string) error {
		if err := required("state", e.state); err != nil {
			return err
		}
		data, err := os.ReadFile(filepath.Join(e.state, ca.KubeBundleFile))
		if err != nil {
			return fmt.Errorf("%w (has mwi-issuer serve run on this state directory?)", err)
		}
		_, err = e.stdout.Write(data)
		return err
	}, func(fs *pflag.FlagSet) {
		fs.StringVar(&e.state, "state", "", "issuer state `DIR` (required)")
	})
}
