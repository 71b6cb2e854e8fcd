package ca

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// identityURI encodes an identity as the URI SAN of its certificate, so that
// the generation is covered by the authority's signature and cannot be
// changed by the holder.
func identityURI(id Identity) *url.URL {
	return &url.URL{
		Scheme: "mwi",
		Host:   "bot",
		Path:   fmt.Sprintf("/%s/instance/%s/generation/%d", id.Bot, id.Instance, id.Generation),
	}
}

func parseIdentityURI(u *url.URL) (Identity, bool) {
	if u.Scheme != "mwi" || u.Host != "bot" || u.RawQuery != "" || u.Fragment != "" {
		return Identity{}, false
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 5 || parts[1] != "instance" || parts[3] != "generation" || parts[0] == "" || parts[2] == "" {
		return Identity{}, false
	}
	gen, err := strconv.ParseUint(parts[4], 10, 64)
	if err != nil {
		return Identity{}, false
	}
	return Identity{Bot: parts[0], Instance: parts[2], Generation: gen}, true
}
