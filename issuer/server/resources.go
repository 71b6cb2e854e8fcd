package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/sdnotify"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/kuberbac"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// storePrefix starts the name that a stored document goes by in errors and
// in the Source of its resources: "store:role/deploy".
const storePrefix = "store:"

// The running resource set is the resource directory's documents together
// with those of the store, validated together. It changes in one place,
// swap: the directory watcher and SIGHUP (reload) read the directory
// afresh and take the store as it is; an admin change (changeResources)
// takes the directory as last loaded and the store as it would be after
// the change. Either way a set that does not load is refused whole, and
// the running set keeps serving.

// storedDocs returns the stored documents, named for errors.
func storedDocs(rs []store.Resource) []resource.Doc {
	docs := make([]resource.Doc, 0, len(rs))
	for _, r := range rs {
		docs = append(docs, resource.Doc{Name: storePrefix + r.Key(), Data: []byte(r.Source)})
	}
	return docs
}

// origin is where a resource of the running set comes from, for listings:
// api.OriginStore, or the directory file's FILE:LINE.
func origin(loc resource.Location) string {
	if strings.HasPrefix(loc.File, storePrefix) {
		return api.OriginStore
	}
	return loc.String()
}

// loadAll loads dir and the stored documents together.
func (s *Server) loadAll(ctx context.Context, dir *resource.Dir) (*resource.Set, error) {
	stored, err := s.auth.Store.Resources(ctx)
	if err != nil {
		return nil, err
	}
	return resource.Load(dir, storedDocs(stored))
}

// swap makes set, loaded from dir and the store, the running set. The
// caller holds reloadMu.
func (s *Server) swap(dir *resource.Dir, set *resource.Set, why string) {
	s.dir = dir
	s.auth.SetResources(set)
	s.metrics.ResourcesLoaded(nil, time.Now())
	if s.loaded != nil {
		s.loaded(set)
	}
	s.log.Info("resources loaded", "why", why, "dir", s.cfg.ResourcesDir, "roles", len(set.Roles()), "bots", len(set.Bots()),
		"clusters", len(set.KubeClusters()), "tokens", len(set.Tokens()))
	warnKubeRBAC(s.log, set)
	s.notifyStatus()
}

// A put is one document of a change, with the name and line the caller
// knows it by.
type put struct {
	res  store.Resource
	doc  resource.Doc // named as the caller's file, lines as in it
	line int
}

// where returns "FILE:LINE" of the put's document.
func (p put) where() string { return fmt.Sprintf("%s:%d", p.doc.Name, p.line) }

// changeResources stores puts (replacing stored documents of the same
// names only if replace) or deletes the stored document del, if the
// running set stays valid with the change, and swaps the new set in. It is
// all or nothing. Names defined in the resource directory are refused:
// the directory is their source of truth.
func (s *Server) changeResources(ctx context.Context, puts []put, replace bool, del *store.Resource) ([]api.ResourceRef, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	running := s.auth.Resources()
	stored, err := s.auth.Store.Resources(ctx)
	if err != nil {
		return nil, err
	}
	held := make(map[string]bool, len(stored))
	for _, r := range stored {
		held[r.Key()] = true
	}

	var problems []string
	for _, p := range puts {
		if loc, ok := running.Source(p.res.Kind, p.res.Name); ok && !strings.HasPrefix(loc.File, storePrefix) {
			problems = append(problems, fmt.Sprintf("%s: %s %q is defined in %s, in the resource directory; edit that file instead",
				p.where(), p.res.Kind, p.res.Name, loc))
		} else if held[p.res.Key()] && !replace {
			problems = append(problems, fmt.Sprintf("%s: %s %q exists already; use --force to replace it", p.where(), p.res.Kind, p.res.Name))
		}
	}
	if del != nil {
		if loc, ok := running.Source(del.Kind, del.Name); ok && !strings.HasPrefix(loc.File, storePrefix) {
			return nil, fault.FailedPrecondition(api.CodeBadRequest, "%s %q is defined in %s, in the resource directory; edit that file instead",
				del.Kind, del.Name, loc)
		}
		if !held[del.Key()] {
			return nil, fault.NotFound(api.CodeNotFound, "no %s named %q in the issuer's store", del.Kind, del.Name)
		}
	}
	if len(problems) > 0 {
		return nil, fault.Invalid(api.CodeBadRequest, "%s\nnothing was changed", strings.Join(problems, "\n"))
	}

	// The candidate: the stored documents the change leaves, then the
	// change's own, named as the caller knows them so that errors point
	// into the caller's file; then the same, all named as stored, for the
	// set that runs.
	changed := make(map[string]bool)
	for _, p := range puts {
		changed[p.res.Key()] = true
	}
	if del != nil {
		changed[del.Key()] = true
	}
	var kept []store.Resource
	for _, r := range stored {
		if !changed[r.Key()] {
			kept = append(kept, r)
		}
	}
	candidate := storedDocs(kept)
	final := slices.Clone(kept)
	for _, p := range puts {
		candidate = append(candidate, p.doc)
		final = append(final, p.res)
	}
	if _, err := resource.Load(s.dir, candidate); err != nil {
		return nil, fault.Invalid(api.CodeBadRequest, "%v\nnothing was changed", err)
	}
	set, err := resource.Load(s.dir, storedDocs(final))
	if err != nil {
		return nil, fault.Invalid(api.CodeBadRequest, "%v\nnothing was changed", err)
	}

	var refs []api.ResourceRef
	if del != nil {
		if err := s.auth.Store.DeleteResource(ctx, del.Kind, del.Name); err != nil {
			return nil, err
		}
		refs = append(refs, api.ResourceRef{Kind: del.Kind, Name: del.Name})
	}
	if len(puts) > 0 {
		rs := make([]store.Resource, 0, len(puts))
		for _, p := range puts {
			rs = append(rs, p.res)
			refs = append(refs, api.ResourceRef{Kind: p.res.Kind, Name: p.res.Name, Replaced: held[p.res.Key()]})
		}
		if err := s.auth.Store.PutResources(ctx, rs, replace); err != nil {
			return nil, err
		}
	}
	sdnotify.Reloading()
	s.swap(s.dir, set, "admin")
	sdnotify.Ready()
	return refs, nil
}

// CreateResources stores the documents of a file, all or none; see
// changeResources.
func (s *Server) CreateResources(ctx context.Context, req api.CreateResourcesRequest) (api.CreateResourcesResponse, error) {
	file := req.File
	if file == "" {
		file = "-"
	}
	puts, err := s.parsePuts(file, []byte(req.Data))
	if err == nil && len(puts) == 0 {
		err = fault.Invalid(api.CodeBadRequest, "%s: no resource documents", file)
	}
	if err != nil {
		return api.CreateResourcesResponse{}, s.refuse(ctx, audit.EventResourceCreate, err, slog.String("file", file))
	}
	refs, err := s.changeResources(ctx, puts, req.Force, nil)
	if err != nil {
		return api.CreateResourcesResponse{}, s.refuse(ctx, audit.EventResourceCreate, err, slog.String("file", file))
	}
	if err := s.auditChanges(ctx, audit.EventResourceCreate, refs); err != nil {
		return api.CreateResourcesResponse{}, err
	}
	return api.CreateResourcesResponse{Created: refs}, nil
}

// parsePuts splits data, read from the named file, into its documents and
// parses each, so that each is stored as written. Errors name the file and
// the line as they are in data.
func (s *Server) parsePuts(file string, data []byte) ([]put, error) {
	docs, err := resource.SplitDocuments(data)
	if err != nil {
		return nil, fault.Invalid(api.CodeBadRequest, "%s: %v", file, err)
	}
	now := time.Now().UTC()
	var puts []put
	var errs []error
	for _, d := range docs {
		d = dropWarnings(d)
		if d.Text == "" {
			continue
		}
		// Blank lines in front keep the document's line numbers those of
		// the file.
		padded := []byte(strings.Repeat("\n", d.Line-1) + d.Text)
		if namesFile(d.Text) {
			// A file named by a stored document would be read on the
			// issuer's machine, relative to nothing, at every load: if it
			// went away, the issuer would not start. It is refused before
			// Parse reads it.
			errs = append(errs, fmt.Errorf("%s:%d: kube_cluster: spec.certificate_authority_file cannot be stored; "+
				"put the PEM in spec.certificate_authority_data, or keep this cluster in the resource directory", file, d.Line))
			continue
		}
		res, err := resource.Parse(file, padded)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(res) == 0 {
			continue // comments only
		}
		kind, name := resource.KindName(res[0])
		puts = append(puts, put{
			res:  store.Resource{Kind: kind, Name: name, Source: d.Text, Updated: now},
			doc:  resource.Doc{Name: file, Data: padded},
			line: d.Line,
		})
	}
	if len(errs) > 0 {
		return nil, fault.Invalid(api.CodeBadRequest, "%v\nnothing was changed", errors.Join(errs...))
	}
	return puts, nil
}

// dropWarnings returns d without the lines of api.WarningComment at its
// start, which mwi-issuer get wrote: they are not part of the document.
func dropWarnings(d resource.Document) resource.Document {
	for strings.HasPrefix(d.Text, api.WarningComment) {
		_, rest, _ := strings.Cut(d.Text, "\n")
		d.Text = rest
		d.Line++
	}
	return d
}

// namesFile reports whether text is a kube_cluster document that sets
// spec.certificate_authority_file.
func namesFile(text string) bool {
	var doc struct {
		Kind any            `yaml:"kind"`
		Spec map[string]any `yaml:"spec"`
	}
	if yaml.Unmarshal([]byte(text), &doc) != nil {
		return false // Parse will say what is wrong
	}
	_, ok := doc.Spec["certificate_authority_file"]
	return ok && doc.Kind == "kube_cluster"
}

// DeleteResource removes the stored document KIND/NAME if the running set
// stays valid without it.
func (s *Server) DeleteResource(ctx context.Context, kind, name string) error {
	attrs := []slog.Attr{slog.String("kind", kind), slog.String("name", name)}
	if !slices.Contains(resource.Kinds, kind) {
		return s.refuse(ctx, audit.EventResourceDelete, fault.Invalid(api.CodeBadRequest, "unknown kind %q (want %s)", kind, strings.Join(resource.Kinds, ", ")), attrs...)
	}
	refs, err := s.changeResources(ctx, nil, false, &store.Resource{Kind: kind, Name: name})
	if err != nil {
		return s.refuse(ctx, audit.EventResourceDelete, err, attrs...)
	}
	return s.auditChanges(ctx, audit.EventResourceDelete, refs)
}

// GetResources returns the documents of the running set of the given kind
// (every kind if empty) and name (every name if empty): stored ones as
// written, and those of the resource directory as they were last loaded.
func (s *Server) GetResources(ctx context.Context, kind, name string) (api.Resources, error) {
	if kind != "" && !slices.Contains(resource.Kinds, kind) {
		return api.Resources{}, fault.Invalid(api.CodeBadRequest, "unknown kind %q (want %s)", kind, strings.Join(resource.Kinds, ", "))
	}
	stored, err := s.auth.Store.Resources(ctx)
	if err != nil {
		return api.Resources{}, err
	}
	byKey := make(map[string]store.Resource, len(stored))
	for _, r := range stored {
		byKey[r.Key()] = r
	}
	s.reloadMu.Lock()
	dir := s.dir
	s.reloadMu.Unlock()
	out := api.Resources{Resources: []api.ResourceDoc{}}
	for _, r := range s.auth.Resources().All(kind) {
		k, n := resource.KindName(r)
		if name != "" && n != name {
			continue
		}
		loc, _ := s.auth.Resources().Source(k, n)
		doc := api.ResourceDoc{Kind: k, Name: n, Origin: origin(loc), Warnings: kuberbac.WarningsFor(s.auth.Resources(), k, n)}
		if doc.Origin == api.OriginStore {
			doc.Source = byKey[k+"/"+n].Source
		} else if text, ok := dir.Document(loc); ok {
			doc.Source = text
		}
		out.Resources = append(out.Resources, doc)
	}
	if name != "" && len(out.Resources) == 0 {
		return api.Resources{}, fault.NotFound(api.CodeNotFound, "no %s named %q", kind, name)
	}
	return out, nil
}

// botDoc is the MWI v1 document of a bot, as bots add and bots update
// write it.
type botDoc struct {
	Kind     string `yaml:"kind"`
	Version  string `yaml:"version"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec struct {
		Roles  []string            `yaml:"roles"`
		Traits map[string][]string `yaml:"traits,omitempty"`
	} `yaml:"spec"`
}

// renderBot returns the v1 document of a bot.
func renderBot(name string, roles []string, traits map[string][]string) (string, error) {
	var d botDoc
	d.Kind, d.Version, d.Metadata.Name = "bot", "v1", name
	d.Spec.Roles, d.Spec.Traits = roles, traits
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(d); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	return b.String(), nil
}

// putBot stores the rendered document of a bot.
func (s *Server) putBot(ctx context.Context, event, name string, roles []string, traits map[string][]string, replace bool) error {
	attrs := []slog.Attr{slog.String("kind", "bot"), slog.String("name", name)}
	text, err := renderBot(name, roles, traits)
	if err != nil {
		return err
	}
	file := storePrefix + "bot/" + name
	puts, err := s.parsePuts(file, []byte(text))
	if err != nil {
		return s.refuse(ctx, event, err, attrs...)
	}
	refs, err := s.changeResources(ctx, puts, replace, nil)
	if err != nil {
		return s.refuse(ctx, event, err, attrs...)
	}
	return s.auditChanges(ctx, event, refs)
}

// AddBot stores a new bot with roles, and logins as its logins trait.
func (s *Server) AddBot(ctx context.Context, req api.AddBotRequest) error {
	if b, ok := s.auth.Resources().Bot(req.Name); ok {
		err := fault.Conflict(api.CodeBadRequest, "bot %q exists already (defined in %s); change it with bots update", req.Name, origin(b.Source))
		return s.refuse(ctx, audit.EventResourceCreate, err, slog.String("kind", "bot"), slog.String("name", req.Name))
	}
	var traits map[string][]string
	if len(req.Logins) > 0 {
		traits = map[string][]string{"logins": req.Logins}
	}
	return s.putBot(ctx, audit.EventResourceCreate, req.Name, req.Roles, traits, false)
}

// UpdateBot changes a stored bot's roles and logins trait, writing its
// document anew in the v1 format. The bot's next renewal gets what the
// new roles allow.
func (s *Server) UpdateBot(ctx context.Context, name string, req api.UpdateBotRequest) error {
	attrs := []slog.Attr{slog.String("kind", "bot"), slog.String("name", name)}
	if len(req.AddRoles) > 0 && len(req.SetRoles) > 0 {
		return s.refuse(ctx, audit.EventResourceCreate, fault.Invalid(api.CodeBadRequest, "add roles or set them, not both"), attrs...)
	}
	b, ok := s.auth.Resources().Bot(name)
	if !ok {
		return s.refuse(ctx, audit.EventResourceCreate, fault.NotFound(api.CodeBotUnknown, "no bot named %q", name), attrs...)
	}
	if o := origin(b.Source); o != api.OriginStore {
		return s.refuse(ctx, audit.EventResourceCreate, fault.FailedPrecondition(api.CodeBadRequest,
			"bot %q is defined in %s, in the resource directory; edit that file instead", name, o), attrs...)
	}
	roles := b.Roles
	if len(req.SetRoles) > 0 {
		roles = req.SetRoles
	}
	for _, r := range req.AddRoles {
		if !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	traits := maps.Clone(b.Traits)
	for _, l := range req.AddLogins {
		if traits == nil {
			traits = map[string][]string{}
		}
		if !slices.Contains(traits["logins"], l) {
			traits["logins"] = append(traits["logins"], l)
		}
	}
	return s.putBot(ctx, audit.EventResourceCreate, name, roles, traits, true)
}

// Bots lists the bots of the running set.
func (s *Server) Bots(ctx context.Context) (api.Bots, error) {
	instances, err := s.auth.Store.Instances(ctx)
	if err != nil {
		return api.Bots{}, err
	}
	count := map[string]int{}
	for _, in := range instances {
		count[in.Bot]++
	}
	out := api.Bots{Bots: []api.BotInfo{}}
	for _, b := range s.auth.Resources().Bots() {
		out.Bots = append(out.Bots, api.BotInfo{Name: b.Name, Roles: b.Roles, Traits: b.Traits, Origin: origin(b.Source), Instances: count[b.Name]})
	}
	return out, nil
}

// Instances lists the instances of bot (of every bot if empty), with the
// node inventory's entry of those that are hosts.
func (s *Server) Instances(ctx context.Context, bot string) (api.Instances, error) {
	instances, err := s.auth.Store.Instances(ctx)
	if err != nil {
		return api.Instances{}, err
	}
	hosts, err := s.hosts(ctx)
	if err != nil {
		return api.Instances{}, err
	}
	out := api.Instances{Instances: []api.InstanceInfo{}}
	for _, in := range instances {
		if bot == "" || in.Bot == bot {
			out.Instances = append(out.Instances, instanceInfo(in, hosts))
		}
	}
	return out, nil
}

// Instance returns one instance.
func (s *Server) Instance(ctx context.Context, id string) (api.InstanceInfo, error) {
	in, err := s.auth.Store.Instance(ctx, id)
	if errors.Is(err, store.ErrInstanceUnknown) {
		return api.InstanceInfo{}, fault.NotFound(api.CodeNotFound, "no bot instance %q", id)
	}
	if err != nil {
		return api.InstanceInfo{}, err
	}
	hosts, err := s.hosts(ctx)
	if err != nil {
		return api.InstanceInfo{}, err
	}
	return instanceInfo(in, hosts), nil
}

// hosts returns the node inventory by instance ID.
func (s *Server) hosts(ctx context.Context) (map[string]store.Node, error) {
	nodes, err := s.auth.Store.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.Node, len(nodes))
	for _, n := range nodes {
		out[n.Instance] = n
	}
	return out, nil
}

func instanceInfo(in store.Instance, hosts map[string]store.Node) api.InstanceInfo {
	info := api.InstanceInfo{ID: in.ID, Bot: in.Bot, JoinMethod: in.Method(), TokenName: in.TokenName,
		Generation: in.Generation, Created: in.Created, Renewed: in.Renewed}
	if n, ok := hosts[in.ID]; ok {
		info.Host = &api.Node{Names: n.Names, Instance: n.Instance, Bot: n.Bot, Labels: n.Labels, Address: n.Address,
			Version: n.Version, Renewed: n.Renewed}
	}
	return info
}

// tokenIDLen is how much of a one-time token's hash lists show as its ID.
const tokenIDLen = 16

// Tokens lists the one-time tokens, without their secrets, and the token
// resources.
func (s *Server) Tokens(ctx context.Context) (api.Tokens, error) {
	tokens, err := s.auth.Store.Tokens(ctx)
	if err != nil {
		return api.Tokens{}, err
	}
	out := api.Tokens{Tokens: []api.JoinToken{}, Resources: []api.TokenResource{}}
	for _, t := range tokens {
		out.Tokens = append(out.Tokens, api.JoinToken{ID: t.Hash[:min(tokenIDLen, len(t.Hash))], Bot: t.Bot, Created: t.Created,
			Expires: t.Expires, Used: !t.ConsumedAt.IsZero(), UsedBy: t.ConsumedBy})
	}
	for _, t := range s.auth.Resources().Tokens() {
		out.Resources = append(out.Resources, api.TokenResource{Name: t.Name, JoinMethod: t.JoinMethod, Bot: t.BotName,
			Expires: t.Expires, Origin: origin(t.Source)})
	}
	return out, nil
}

// DeleteToken removes a token: the token resource of that name, or the
// one-time token whose secret, or whose ID as Tokens lists it, is id.
func (s *Server) DeleteToken(ctx context.Context, id string) error {
	if _, ok := s.auth.Resources().Token(id); ok {
		return s.DeleteResource(ctx, "token", id)
	}
	// id may be a secret, and the refusals below are audited: longer than
	// an ID as Tokens lists it, it is shown as the ID it has if it is a
	// secret, never as itself.
	shown := id
	if len(id) > tokenIDLen {
		shown = authority.HashToken(id)[:tokenIDLen]
	}
	attrs := []slog.Attr{slog.String("token", shown)}
	tokens, err := s.auth.Store.Tokens(ctx)
	if err != nil {
		return err
	}
	secretHash := authority.HashToken(id)
	var match []store.Token
	for _, t := range tokens {
		if t.Hash == secretHash || len(id) >= 8 && strings.HasPrefix(t.Hash, id) {
			match = append(match, t)
		}
	}
	switch len(match) {
	case 0:
		if shown != id {
			return s.refuse(ctx, audit.EventTokenDelete, fault.NotFound(api.CodeNotFound,
				"no one-time token has that secret (its ID would be %s), and no token resource has that name", shown), attrs...)
		}
		return s.refuse(ctx, audit.EventTokenDelete, fault.NotFound(api.CodeNotFound, "no token resource or one-time token %q", id), attrs...)
	case 1:
	default:
		return s.refuse(ctx, audit.EventTokenDelete, fault.Invalid(api.CodeBadRequest, "%q is the start of %d tokens' IDs; give more of it", id, len(match)), attrs...)
	}
	if err := s.auth.Store.DeleteToken(ctx, match[0].Hash); err != nil {
		return err
	}
	return s.record(ctx, audit.EventTokenDelete, audit.Allowed, slog.String("token", match[0].Hash[:tokenIDLen]), slog.String("bot", match[0].Bot))
}

// KubeClusters lists the Kubernetes clusters of the running set.
func (s *Server) KubeClusters(context.Context) (api.KubeClusters, error) {
	out := api.KubeClusters{Clusters: []api.KubeClusterInfo{}}
	for _, c := range s.auth.Resources().KubeClusters() {
		out.Clusters = append(out.Clusters, api.KubeClusterInfo{Name: c.Name, Labels: c.Labels, Server: c.Server, Origin: origin(c.Source)})
	}
	return out, nil
}

// auditChanges records each change made.
func (s *Server) auditChanges(ctx context.Context, event string, refs []api.ResourceRef) error {
	var errs []error
	for _, r := range refs {
		errs = append(errs, s.record(ctx, event, audit.Allowed, slog.String("kind", r.Kind), slog.String("name", r.Name),
			slog.Bool("replaced", r.Replaced)))
	}
	return errors.Join(errs...)
}

// refuse audits a refused change and returns err.
func (s *Server) refuse(ctx context.Context, event string, err error, attrs ...slog.Attr) error {
	reason := err.Error()
	if e, ok := fault.As(err); ok {
		reason = e.Message
	}
	s.record(ctx, event, audit.Denied, append(attrs, slog.String("reason", reason))...)
	return err
}

// record writes an audit record, which names the admin caller that
// auditActor put in ctx.
func (s *Server) record(ctx context.Context, event, outcome string, attrs ...slog.Attr) error {
	return s.auth.Audit.Record(ctx, event, outcome, attrs...)
}
