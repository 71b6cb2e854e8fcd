package api

import "time"

// CreateResourcesRequest is the body of POST /admin/v1/resources on the
// issuer's admin socket: a file of resource documents, all of which are
// stored, or none.
type CreateResourcesRequest struct {
	// File is the file's name, used in error messages.
	File string `json:"file"`
	// Data is the file's content.
	Data string `json:"data"`
	// Force replaces documents of the same kind and name already stored.
	Force bool `json:"force,omitempty"`
}

// ResourceRef names a resource.
type ResourceRef struct {
	Kind string `json:"kind" yaml:"kind"`
	Name string `json:"name" yaml:"name"`
	// Replaced is set when a stored document of that name was replaced.
	Replaced bool `json:"replaced,omitempty" yaml:"replaced,omitempty"`
}

// CreateResourcesResponse lists the documents a create stored.
type CreateResourcesResponse struct {
	Created []ResourceRef `json:"created"`
}

// OriginStore is the Origin of a resource kept in the issuer's store.
const OriginStore = "store"

// ResourceDoc is one resource document as written.
type ResourceDoc struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Origin is OriginStore, or FILE:LINE of the resource directory's
	// file that defines the resource.
	Origin string `json:"origin"`
	// Source is the document's text.
	Source string `json:"source"`
	// Warnings say what of the resource cannot take effect, such as
	// kubernetes_resources that restrict nothing because the certificates
	// are in system:masters.
	Warnings []string `json:"warnings,omitempty"`
}

// WarningComment starts each line that mwi-issuer get writes before a
// document to show one of its Warnings. The issuer drops such lines at the
// start of a document it is given to store, so that get's output given
// back to create -f --force stores the document as it was.
const WarningComment = "# mwi-issuer warning: "

// Resources is the body of GET /admin/v1/resources.
type Resources struct {
	Resources []ResourceDoc `json:"resources"`
}

// AddBotRequest is the body of POST /admin/v1/bots.
type AddBotRequest struct {
	Name   string   `json:"name"`
	Roles  []string `json:"roles"`
	Logins []string `json:"logins,omitempty"`
}

// UpdateBotRequest is the body of POST /admin/v1/bots/{bot}/update: roles
// to add or to set (not both), logins to add to the bot's logins trait.
type UpdateBotRequest struct {
	AddRoles  []string `json:"add_roles,omitempty"`
	SetRoles  []string `json:"set_roles,omitempty"`
	AddLogins []string `json:"add_logins,omitempty"`
}

// BotInfo is a bot, as GET /admin/v1/bots lists it.
type BotInfo struct {
	Name   string              `json:"name" yaml:"name"`
	Roles  []string            `json:"roles" yaml:"roles"`
	Traits map[string][]string `json:"traits,omitempty" yaml:"traits,omitempty"`
	Origin string              `json:"origin" yaml:"origin"`
	// Instances counts the bot's instances.
	Instances int `json:"instances" yaml:"instances"`
}

// Bots is the body of GET /admin/v1/bots.
type Bots struct {
	Bots []BotInfo `json:"bots" yaml:"bots"`
}

// InstanceInfo is a bot instance, as GET /admin/v1/instances lists it.
type InstanceInfo struct {
	ID         string     `json:"id" yaml:"id"`
	Bot        string     `json:"bot" yaml:"bot"`
	JoinMethod JoinMethod `json:"join_method" yaml:"join_method"`
	// TokenName is the token resource the instance joined with, if any.
	TokenName  string    `json:"token_name,omitempty" yaml:"token_name,omitempty"`
	Generation uint64    `json:"generation" yaml:"generation"`
	Created    time.Time `json:"created" yaml:"created"`
	// Renewed is the last renewal; zero if it never renewed.
	Renewed time.Time `json:"renewed,omitzero" yaml:"renewed,omitempty"`
	// Host is the instance's entry in the node inventory, if it is a host.
	Host *Node `json:"host,omitempty" yaml:"host,omitempty"`
}

// Instances is the body of GET /admin/v1/instances.
type Instances struct {
	Instances []InstanceInfo `json:"instances" yaml:"instances"`
}

// JoinToken is a one-time join token, without its secret. ID is the start
// of the hex SHA-256 of the secret, which tokens rm takes.
type JoinToken struct {
	ID      string    `json:"id" yaml:"id"`
	Bot     string    `json:"bot" yaml:"bot"`
	Created time.Time `json:"created" yaml:"created"`
	Expires time.Time `json:"expires" yaml:"expires"`
	Used    bool      `json:"used" yaml:"used"`
	// UsedBy is the instance that joined with the token.
	UsedBy string `json:"used_by,omitempty" yaml:"used_by,omitempty"`
}

// TokenResource is a token resource: a rule for joining without a secret.
type TokenResource struct {
	Name       string     `json:"name" yaml:"name"`
	JoinMethod JoinMethod `json:"join_method" yaml:"join_method"`
	Bot        string     `json:"bot" yaml:"bot"`
	Expires    time.Time  `json:"expires,omitzero" yaml:"expires,omitempty"`
	Origin     string     `json:"origin" yaml:"origin"`
}

// Tokens is the body of GET /admin/v1/tokens.
type Tokens struct {
	Tokens    []JoinToken     `json:"tokens" yaml:"tokens"`
	Resources []TokenResource `json:"resources" yaml:"resources"`
}

// KubeClusterInfo is a Kubernetes cluster resource.
type KubeClusterInfo struct {
	Name   string            `json:"name" yaml:"name"`
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
	Server string            `json:"server" yaml:"server"`
	Origin string            `json:"origin" yaml:"origin"`
}

// KubeClusters is the body of GET /admin/v1/kube.
type KubeClusters struct {
	Clusters []KubeClusterInfo `json:"clusters" yaml:"clusters"`
}
