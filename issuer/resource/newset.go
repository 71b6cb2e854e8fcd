package resource

import (
	"errors"
	"fmt"
)

// NewSet returns a Set of resources already decoded, such as those
// [Parse] returns or a program builds. It checks what [LoadDir] checks
// across files: a name defined twice for the same kind, a bot naming a
// role the set does not define, and a token naming a bot it does not
// define. On error it returns a nil set and an error holding every
// problem found, each prefixed with the location of the resource it
// refers to, when it has one.
func NewSet(resources ...Resource) (*Set, error) {
	s := &Set{
		roles:    make(map[string]Role),
		bots:     make(map[string]Bot),
		clusters: make(map[string]KubeCluster),
		tokens:   make(map[string]Token),
	}
	var errs []error
	fail := func(at Location, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if at.File != "" {
			msg = at.String() + ": " + msg
		}
		errs = append(errs, errors.New(msg))
	}
	for _, r := range resources {
		switch r := r.(type) {
		case Role:
			if _, ok := s.roles[r.Name]; ok {
				fail(r.Source, "duplicate role %q", r.Name)
			}
			s.roles[r.Name] = r.clone()
		case Bot:
			if _, ok := s.bots[r.Name]; ok {
				fail(r.Source, "duplicate bot %q", r.Name)
			}
			s.bots[r.Name] = r.clone()
		case KubeCluster:
			if _, ok := s.clusters[r.Name]; ok {
				fail(r.Source, "duplicate %s %q", kindKubeCluster, r.Name)
			}
			s.clusters[r.Name] = r.clone()
		case Token:
			if _, ok := s.tokens[r.Name]; ok {
				fail(r.Source, "duplicate %s %q", kindToken, r.Name)
			}
			s.tokens[r.Name] = r.clone()
		default:
			errs = append(errs, fmt.Errorf("resource of type %T: want a role, a bot, a %s or a %s", r, kindKubeCluster, kindToken))
		}
	}
	for _, b := range s.Bots() { // sorted, so the errors come in one order
		for _, role := range b.Roles {
			if _, ok := s.roles[role]; !ok {
				fail(b.Source, "bot %q references unknown role %q", b.Name, role)
			}
		}
	}
	for _, t := range s.Tokens() {
		if _, ok := s.bots[t.BotName]; !ok {
			fail(t.Source, "token %q references unknown bot %q", t.Name, t.BotName)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}
