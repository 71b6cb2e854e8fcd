package api

import "time"

// CodeKubernetesClusterNotAllowed refuses a request that names a
// Kubernetes cluster the issuer does not have or the bot's roles do not
// allow, or a cluster whose roles give the bot more than one user.
const CodeKubernetesClusterNotAllowed = "kubernetes_cluster_not_allowed"

// KubernetesRequest asks the issuer for Kubernetes client certificates.
//
// A cluster is selected when Clusters names it or any of Labels matches its
// labels; a label selector matches when the cluster has every label of the
// selector with the same value (Teleport's kubernetes/v2 selectors). A named
// cluster that does not exist or that the roles do not allow refuses the
// whole request; a selector only selects among the allowed clusters.
type KubernetesRequest struct {
	// CSR is a PEM-encoded PKCS #10 request, signed by a key that mwid made
	// in memory for this request. Every certificate is for this one key.
	CSR      string              `json:"csr"`
	Clusters []string            `json:"clusters,omitempty"`
	Labels   []map[string]string `json:"labels,omitempty"`
}

// KubernetesCredential is a client certificate for one Kubernetes cluster,
// and what a kubeconfig needs to reach the cluster.
type KubernetesCredential struct {
	Cluster string            `json:"cluster"`
	Labels  map[string]string `json:"labels,omitempty"`
	// Server is the API server's URL, such as https://10.0.0.1:6443.
	Server string `json:"server"`
	// CertificateAuthorityData is the PEM of the API server's CA (base64 in
	// JSON, as in a kubeconfig); empty means the system's roots.
	CertificateAuthorityData []byte `json:"certificate_authority_data,omitempty"`
	// ClientCertificate is the PEM client certificate: CN is the
	// Kubernetes user, each O a group.
	ClientCertificate string    `json:"client_certificate"`
	Expires           time.Time `json:"expires"`
}

// KubernetesCluster is one element of GET /v1/kubernetes/clusters on mwid's
// local API: a cluster mwid holds a certificate for.
type KubernetesCluster struct {
	Name    string            `json:"name"`
	Server  string            `json:"server"`
	Labels  map[string]string `json:"labels,omitempty"`
	User    string            `json:"user"`
	Groups  []string          `json:"groups"`
	Expires time.Time         `json:"expires"`
}

// ExecCredentialAPIVersion is the version of the client.authentication.k8s.io
// API that mwid's ExecCredential speaks.
const ExecCredentialAPIVersion = "client.authentication.k8s.io/v1"

// ExecCredential is what a kubectl exec credential plugin prints (the
// ExecCredential kind of client.authentication.k8s.io/v1), and the body of
// GET /v1/kubernetes/credential.
type ExecCredential struct {
	APIVersion string               `json:"apiVersion"`
	Kind       string               `json:"kind"`
	Status     ExecCredentialStatus `json:"status"`
}

// ExecCredentialStatus holds the client certificate and its key, both PEM.
// kubectl runs the plugin again after ExpirationTimestamp.
type ExecCredentialStatus struct {
	ExpirationTimestamp   time.Time `json:"expirationTimestamp"`
	ClientCertificateData string    `json:"clientCertificateData"`
	ClientKeyData         string    `json:"clientKeyData"`
}
