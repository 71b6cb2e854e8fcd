package fault_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
)

func TestConstructors(t *testing.T) {
	for _, tc := range []struct {
		f    func(code, format string, args ...any) *fault.Error
		kind fault.Kind
	}{
		{fault.Internal, fault.KindInternal},
		{fault.Invalid, fault.KindInvalid},
		{fault.Unauthenticated, fault.KindUnauthenticated},
		{fault.Denied, fault.KindDenied},
		{fault.NotFound, fault.KindNotFound},
		{fault.Conflict, fault.KindConflict},
		{fault.FailedPrecondition, fault.KindFailedPrecondition},
		{fault.RateLimited, fault.KindRateLimited},
		{fault.Upstream, fault.KindUpstream},
		{fault.Unavailable, fault.KindUnavailable},
	} {
		e := tc.f(api.CodeTokenUsed, "token %s was used", "abc")
		if e.Kind != tc.kind || e.Code != api.CodeTokenUsed || e.Message != "token abc was used" {
			t.Errorf("%v constructor = %+v", tc.kind, e)
		}
		if got, want := e.Error(), "token_used: token abc was used"; got != want {
			t.Errorf("Error() = %q, want %q", got, want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k := fault.KindInternal; k <= fault.KindUnavailable; k++ {
		if s := k.String(); s == "" || s[0] == 'K' {
			t.Errorf("Kind %d has no name: %q", k, s)
		}
	}
	if got, want := fault.Kind(200).String(), "Kind(200)"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestAs(t *testing.T) {
	denied := fault.Denied(api.CodeBotLocked, "bot ci is locked")
	for _, tc := range []struct {
		name  string
		err   error
		found bool
	}{
		{"refusal", denied, true},
		{"wrapped", fmt.Errorf("renew: %w", denied), true},
		{"joined", errors.Join(errors.New("other"), denied), true},
		{"plain", errors.New("store: broken"), false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, ok := fault.As(tc.err)
			if ok != tc.found || (ok && e != denied) {
				t.Errorf("As = %v, %v", e, ok)
			}
		})
	}
}
