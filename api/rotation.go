package api

import "time"

// Codes of the admin API's refusals of a CA rotation.
const (
	// CodeRotationPhase is a phase that cannot follow the current one, or
	// a retirement that would cut off hosts or bots not caught up.
	CodeRotationPhase = "rotation_phase"
	// CodeRotationConflict is a rotation another admin moved meanwhile.
	CodeRotationConflict = "rotation_conflict"
)

// RotateCARequest asks the issuer to move the rotation of an authority
// (POST /admin/v1/ca/rotate).
type RotateCARequest struct {
	// Type is ssh_user, ssh_host, identity, kube, tls, or all.
	Type string `json:"type"`
	// Phase is the phase to go to: init, update_clients,
	// update_servers, standby or rollback.
	Phase string `json:"phase"`
	// Force retires the old authority (standby) even though some hosts
	// or bots may still hold certificates from it.
	Force bool `json:"force,omitempty"`
}

// CARotations is the state of every authority's rotation
// (GET /admin/v1/ca/rotations, and the answer of a rotate).
type CARotations struct {
	Rotations []CARotation `json:"rotations"`
}

// CARotation is the state of one authority's rotation.
type CARotation struct {
	Type  string `json:"type"`
	Phase string `json:"phase"`
	// Since is when the phase began; zero for an authority never rotated.
	Since time.Time `json:"since,omitzero"`
	// Current and Next are the fingerprints of the authority in use and
	// of the one replacing it (SHA256:… for SSH, the sha256: pin for
	// X.509).
	Current string `json:"current"`
	Next    string `json:"next,omitempty"`
	// Admin made the last change.
	Admin string `json:"admin,omitempty"`
	// Loaded is the phase this issuer signs and trusts by; it differs
	// from Phase while it has not loaded the change, and LoadError then
	// says why, such as a key missing from its state directory.
	Loaded    string `json:"loaded"`
	LoadError string `json:"load_error,omitempty"`
	// NotCaughtUp are the bot instances (and the hosts among them) that
	// have not renewed since the phase began and may still hold
	// certificates, so have not received the new trust or certificates;
	// NotCaughtUpTotal counts them all when the list is cut short.
	NotCaughtUp      []CatchUp `json:"not_caught_up"`
	NotCaughtUpTotal int       `json:"not_caught_up_total"`
}

// CatchUp is a bot instance that has not caught up with a rotation.
type CatchUp struct {
	Bot      string `json:"bot"`
	Instance string `json:"instance"`
	// Node names the host, for an instance that holds host certificates.
	Node []string `json:"node,omitempty"`
	// Renewed is when it was last issued certificates.
	Renewed time.Time `json:"renewed"`
	// Until is when the last certificates it may hold expire at the
	// latest (the roles' max_ttl after Renewed).
	Until time.Time `json:"until"`
}
