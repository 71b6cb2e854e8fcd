package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/cli"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// resourceFlags are the flags of the resource commands.
type resourceFlags struct {
	file      string
	force     bool
	getFormat string
	lsFormat  string
	roles     []string
	logins    []string
	addRoles  []string
	setRoles  []string
	addLogins []string
	tokenBot  string
	tokenTTL  time.Duration
}

// resourceCommands returns the commands that administer the resources in
// the issuer's store, as tctl's create, get, rm, bots, tokens and kube do.
func (e *env) resourceCommands() []*cobra.Command {
	f := &e.res
	lsFlags := func(fs *pflag.FlagSet) {
		fs.StringVar(&f.lsFormat, "format", "text", "output `FORMAT`: text, json or yaml")
		e.adminSocketFlags(fs)
	}
	return []*cobra.Command{
		command("create", "", "store the resource documents of a file, all or none (as tctl create -f)", e.runCreate, func(fs *pflag.FlagSet) {
			fs.StringVarP(&f.file, "file", "f", "", "`FILE` of resource documents, separated by ---; - for standard input (required)")
			fs.BoolVar(&f.force, "force", false, "replace stored resources of the same kind and name")
			e.adminSocketFlags(fs)
		}),
		command("get", "KIND[/NAME]", "print resources as written: role, bot, kube_cluster or token, or all", e.runGet, func(fs *pflag.FlagSet) {
			fs.StringVar(&f.getFormat, "format", "yaml", "output `FORMAT`: yaml or json")
			e.adminSocketFlags(fs)
		}),
		command("rm", "KIND/NAME", "remove a stored resource", e.runRm, e.adminSocketFlags),
		group("bots", "list, add, update and remove bots",
			command("ls", "", "list the bots: roles, traits, instances and where each is defined", e.runBotsLs, lsFlags),
			command("add", "NAME", "add a bot with roles", e.runBotsAdd, func(fs *pflag.FlagSet) {
				fs.StringSliceVar(&f.roles, "roles", nil, "the bot's `ROLES`, comma-separated (required)")
				fs.StringSliceVar(&f.logins, "logins", nil, "`LOGINS` for the bot's logins trait ({{internal.logins}}), comma-separated")
				e.adminSocketFlags(fs)
			}),
			command("update", "NAME", "change a bot's roles or logins; its next renewal gets them", e.runBotsUpdate, func(fs *pflag.FlagSet) {
				fs.StringSliceVar(&f.addRoles, "add-roles", nil, "`ROLES` to add, comma-separated")
				fs.StringSliceVar(&f.setRoles, "set-roles", nil, "`ROLES` that replace the bot's, comma-separated")
				fs.StringSliceVar(&f.addLogins, "add-logins", nil, "`LOGINS` to add to the logins trait, comma-separated")
				e.adminSocketFlags(fs)
			}),
			command("rm", "NAME", "remove a bot", e.runBotsRm, e.adminSocketFlags),
			group("instances", "list the joined instances of bots",
				withFlags(&cobra.Command{
					Use:   "ls [BOT]",
					Short: "list the instances: join method, generation, created, last renewal, host",
					Args: func(cmd *cobra.Command, args []string) error {
						if len(args) > 1 {
							return cli.Usagef("unexpected argument %q", args[1])
						}
						return nil
					},
					RunE: func(_ *cobra.Command, a []string) error { return e.runInstancesLs(a) },
				}, lsFlags),
				command("show", "ID", "show one instance, with its host's names, mwid version and address", e.runInstancesShow, func(fs *pflag.FlagSet) {
					fs.StringVar(&f.getFormat, "format", "yaml", "output `FORMAT`: yaml or json")
					e.adminSocketFlags(fs)
				}),
			),
		),
		group("tokens", "list, add and remove join tokens",
			command("ls", "", "list one-time tokens (never their secrets) and token resources", e.runTokensLs, lsFlags),
			command("add", "", "create a one-time join token for a bot (as token create)", e.runTokensAdd, func(fs *pflag.FlagSet) {
				fs.StringVar(&f.tokenBot, "bot", "", "bot `NAME` the token joins as (required)")
				fs.DurationVar(&f.tokenTTL, "ttl", time.Hour, "`DURATION` the token can be used for")
				fs.StringVar(&f.lsFormat, "format", "text", "output `FORMAT`: text, json or yaml")
				e.adminSocketFlags(fs)
			}),
			command("rm", "ID", "remove a token resource by name, or a one-time token by its ID or secret", e.runTokensRm, e.adminSocketFlags),
		),
		group("kube", "list Kubernetes clusters and render their RBAC",
			command("ls", "", "list the clusters: name, labels, server and where each is defined", e.runKubeLs, lsFlags),
			e.kubeRBACCommand(),
			e.kubeCACommand(),
		),
	}
}

// checkFormat refuses a format that is not one of want.
func checkFormat(format string, want ...string) error {
	if !slices.Contains(want, format) {
		return cli.Usagef("--format must be %s, not %q", strings.Join(want, ", "), format)
	}
	return nil
}

// emit writes v as JSON or YAML, or calls text with a table writer.
func (e *env) emit(format string, v any, text func(w io.Writer)) error {
	switch format {
	case "json":
		return writeJSON(e.stdout, v)
	case "yaml":
		return writeYAML(e.stdout, v)
	}
	w := newTable(e.stdout)
	text(w)
	return w.Flush()
}

func (e *env) runCreate([]string) error {
	if err := required("file", e.res.file); err != nil {
		return err
	}
	path, err := e.socket()
	if err != nil {
		return err
	}
	var data []byte
	if e.res.file == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(e.res.file)
	}
	if err != nil {
		return err
	}
	var resp api.CreateResourcesResponse
	req := api.CreateResourcesRequest{File: e.res.file, Data: string(data), Force: e.res.force}
	if err := adminCall(path, http.MethodPost, "/admin/v1/resources", req, &resp); err != nil {
		return err
	}
	for _, r := range resp.Created {
		verb := "created"
		if r.Replaced {
			verb = "replaced"
		}
		fmt.Fprintf(e.stdout, "%s %q %s\n", r.Kind, r.Name, verb)
	}
	return nil
}

func (e *env) runGet(args []string) error {
	if err := checkFormat(e.res.getFormat, "yaml", "json"); err != nil {
		return err
	}
	kind, name, _ := strings.Cut(args[0], "/")
	if kind == "all" && name == "" {
		kind = ""
	}
	var res api.Resources
	q := url.Values{"kind": {kind}, "name": {name}}
	if err := e.admin(http.MethodGet, "/admin/v1/resources?"+q.Encode(), nil, &res); err != nil {
		return err
	}
	if e.res.getFormat == "json" {
		docs := make([]any, 0, len(res.Resources))
		for _, r := range res.Resources {
			var v any
			if err := yaml.Unmarshal([]byte(r.Source), &v); err != nil {
				return fmt.Errorf("%s/%s: %w", r.Kind, r.Name, err)
			}
			docs = append(docs, v)
			for _, w := range r.Warnings {
				fmt.Fprintf(e.stderr, "warning: %s/%s: %s\n", r.Kind, r.Name, w)
			}
		}
		return writeJSON(e.stdout, docs)
	}
	// Stored documents come out as written, so that this output given to
	// create -f --force changes nothing. Those of the resource directory
	// say where they are defined, as a comment. Warnings come first, as
	// comments the issuer drops when it is given them back.
	for i, r := range res.Resources {
		if i > 0 {
			fmt.Fprint(e.stdout, "---\n")
		}
		for _, w := range r.Warnings {
			fmt.Fprintf(e.stdout, "%s%s\n", api.WarningComment, strings.ReplaceAll(w, "\n", " "))
		}
		if r.Origin != api.OriginStore {
			fmt.Fprintf(e.stdout, "# defined in %s, in the resource directory: edit that file to change it\n", r.Origin)
		}
		fmt.Fprint(e.stdout, r.Source)
	}
	return nil
}

// kindName splits KIND/NAME.
func kindName(arg string) (string, string, error) {
	kind, name, ok := strings.Cut(arg, "/")
	if !ok || kind == "" || name == "" {
		return "", "", cli.Usagef("want KIND/NAME, such as role/deploy, not %q", arg)
	}
	return kind, name, nil
}

func (e *env) runRm(args []string) error {
	kind, name, err := kindName(args[0])
	if err != nil {
		return err
	}
	if err := e.admin(http.MethodDelete, "/admin/v1/resources/"+url.PathEscape(kind)+"/"+url.PathEscape(name), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s %q removed\n", kind, name)
	return nil
}

func (e *env) runBotsLs([]string) error {
	if err := checkFormat(e.res.lsFormat, "text", "json", "yaml"); err != nil {
		return err
	}
	var bots api.Bots
	if err := e.admin(http.MethodGet, "/admin/v1/bots", nil, &bots); err != nil {
		return err
	}
	return e.emit(e.res.lsFormat, bots, func(w io.Writer) {
		fmt.Fprintln(w, "Bot\tRoles\tTraits\tInstances\tDefined in")
		fmt.Fprintln(w, "---\t-----\t------\t---------\t----------")
		for _, b := range bots.Bots {
			var traits []string
			for _, k := range slices.Sorted(maps.Keys(b.Traits)) {
				traits = append(traits, k+"="+strings.Join(b.Traits[k], ","))
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\n", b.Name, strings.Join(b.Roles, ","), strings.Join(traits, " "), b.Instances, b.Origin)
		}
	})
}

// withFlags adds flags to c and returns it.
func withFlags(c *cobra.Command, flags func(*pflag.FlagSet)) *cobra.Command {
	flags(c.Flags())
	return c
}

func (e *env) runBotsAdd(args []string) error {
	if len(e.res.roles) == 0 {
		return cli.Usagef("--roles is required")
	}
	req := api.AddBotRequest{Name: args[0], Roles: e.res.roles, Logins: e.res.logins}
	if err := e.admin(http.MethodPost, "/admin/v1/bots", req, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "bot %q added with roles %s; make a join token with: mwi-issuer tokens add --bot %s\n",
		args[0], strings.Join(e.res.roles, ","), args[0])
	return nil
}

func (e *env) runBotsUpdate(args []string) error {
	f := &e.res
	if len(f.addRoles) == 0 && len(f.setRoles) == 0 && len(f.addLogins) == 0 {
		return cli.Usagef("say what changes: --add-roles, --set-roles or --add-logins")
	}
	if len(f.addRoles) > 0 && len(f.setRoles) > 0 {
		return cli.Usagef("--add-roles and --set-roles do not go together")
	}
	req := api.UpdateBotRequest{AddRoles: f.addRoles, SetRoles: f.setRoles, AddLogins: f.addLogins}
	if err := e.admin(http.MethodPost, "/admin/v1/bots/"+url.PathEscape(args[0])+"/update", req, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "bot %q updated; its instances get the change at their next renewal\n", args[0])
	return nil
}

func (e *env) runBotsRm(args []string) error {
	if err := e.admin(http.MethodDelete, "/admin/v1/bots/"+url.PathEscape(args[0]), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "bot %q removed\n", args[0])
	return nil
}

// when formats a time for a table; zero is "never".
func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

func (e *env) runInstancesLs(args []string) error {
	if err := checkFormat(e.res.lsFormat, "text", "json", "yaml"); err != nil {
		return err
	}
	q := ""
	if len(args) == 1 {
		q = "?" + url.Values{"bot": {args[0]}}.Encode()
	}
	var ins api.Instances
	if err := e.admin(http.MethodGet, "/admin/v1/instances"+q, nil, &ins); err != nil {
		return err
	}
	return e.emit(e.res.lsFormat, ins, func(w io.Writer) {
		fmt.Fprintln(w, "Instance\tBot\tJoin method\tGeneration\tCreated\tLast renewal\tHost\tVersion")
		fmt.Fprintln(w, "--------\t---\t-----------\t----------\t-------\t------------\t----\t-------")
		for _, in := range ins.Instances {
			host, version := "", ""
			if in.Host != nil {
				host, version = strings.Join(in.Host.Names, ","), in.Host.Version
			}
			method := string(in.JoinMethod)
			if in.TokenName != "" {
				method += " (" + in.TokenName + ")"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", in.ID, in.Bot, method, in.Generation, when(in.Created), when(in.Renewed), host, version)
		}
	})
}

func (e *env) runInstancesShow(args []string) error {
	if err := checkFormat(e.res.getFormat, "yaml", "json"); err != nil {
		return err
	}
	var in api.InstanceInfo
	if err := e.admin(http.MethodGet, "/admin/v1/instances/"+url.PathEscape(args[0]), nil, &in); err != nil {
		return err
	}
	return e.emit(e.res.getFormat, in, nil)
}

func (e *env) runTokensLs([]string) error {
	if err := checkFormat(e.res.lsFormat, "text", "json", "yaml"); err != nil {
		return err
	}
	var toks api.Tokens
	if err := e.admin(http.MethodGet, "/admin/v1/tokens", nil, &toks); err != nil {
		return err
	}
	return e.emit(e.res.lsFormat, toks, func(w io.Writer) {
		fmt.Fprintln(w, "Token\tJoin method\tBot\tExpires\tUsed\tDefined in")
		fmt.Fprintln(w, "-----\t-----------\t---\t-------\t----\t----------")
		for _, t := range toks.Resources {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t-\t%s\n", t.Name, t.JoinMethod, t.Bot, when(t.Expires), t.Origin)
		}
		for _, t := range toks.Tokens {
			used := "no"
			if t.Used {
				used = "yes, by " + t.UsedBy
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, api.JoinMethodToken, t.Bot, when(t.Expires), used, "one-time")
		}
	})
}

func (e *env) runTokensAdd([]string) error {
	if err := required("bot", e.res.tokenBot); err != nil {
		return err
	}
	if err := checkFormat(e.res.lsFormat, "text", "json", "yaml"); err != nil {
		return err
	}
	var resp api.CreateTokenResponse
	req := api.CreateTokenRequest{Bot: e.res.tokenBot, TTLSeconds: int64(e.res.tokenTTL / time.Second)}
	if err := e.admin(http.MethodPost, "/admin/v1/tokens", req, &resp); err != nil {
		return err
	}
	return e.emit(e.res.lsFormat, resp, func(w io.Writer) {
		fmt.Fprintf(w, "token for bot %q, valid until %s (shown once):\n%s\n", resp.Bot, when(resp.Expires), resp.Token)
	})
}

func (e *env) runTokensRm(args []string) error {
	if err := e.admin(http.MethodDelete, "/admin/v1/tokens/"+url.PathEscape(args[0]), nil, nil); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "token %q removed\n", args[0])
	return nil
}

func (e *env) runKubeLs([]string) error {
	if err := checkFormat(e.res.lsFormat, "text", "json", "yaml"); err != nil {
		return err
	}
	var kc api.KubeClusters
	if err := e.admin(http.MethodGet, "/admin/v1/kube", nil, &kc); err != nil {
		return err
	}
	return e.emit(e.res.lsFormat, kc, func(w io.Writer) {
		fmt.Fprintln(w, "Cluster\tLabels\tServer\tDefined in")
		fmt.Fprintln(w, "-------\t------\t------\t----------")
		for _, c := range kc.Clusters {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Name, sshaccess.FormatLabels(c.Labels), c.Server, c.Origin)
		}
	})
}
