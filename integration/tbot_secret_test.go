package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTBotTokenSecretNeverShown joins with tbot's format and an inline
// secret (join method token), right, wrong, used and next to another
// error: the secret appears in no output of mwid, nor in the issuer's log
// or audit log.
func TestTBotTokenSecretNeverShown(t *testing.T) {
	t.Parallel()
	_, iss := startGuideIssuer(t, "")
	secret := iss.CreateToken(t, "github-bot", 10*time.Minute)
	wrong := strings.Repeat("ab", 32)
	config := func(proxy, method, token string) string {
		return "version: v2\nproxy_server: " + proxy + "\nonboarding:\n  join_method: " + method + "\n  token: " + token +
			"\ncertificate_ttl: 5m\nstorage:\n  type: memory\noutputs:\n  - type: identity\n    destination:\n      type: directory\n      path: ./out\n"
	}
	for _, tc := range []struct {
		name, config, secret string
		ok                   bool
	}{
		{"right secret", config(iss.Addr, "token", secret), secret, true},
		{"used secret", config(iss.Addr, "token", secret), secret, false},
		{"wrong secret", config(iss.Addr, "token", wrong), wrong, false},
		{"bad proxy_server", config("http://"+iss.Addr, "token", wrong), wrong, false},
		{"unknown join method", config(iss.Addr, "Token", wrong), wrong, false},
		{"secret given as a token name", config(iss.Addr, "github", wrong), wrong, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			work := t.TempDir()
			if err := os.WriteFile(filepath.Join(work, "bot.yaml"), []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			res, err := runIn(t, work, nil, time.Minute, iss.Bins.Daemon, "--oneshot", "-c", "bot.yaml", "--ca-pin", iss.Pin)
			if (err == nil) != tc.ok {
				t.Fatalf("mwid --oneshot: %v, want ok %v\n%s", err, tc.ok, res)
			}
			if strings.Contains(res, tc.secret) {
				t.Errorf("mwid shows the secret:\n%s", res)
			}
		})
	}
	logs, err := os.ReadFile(iss.AuditLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{secret, wrong} {
		if strings.Contains(string(logs), s) || strings.Contains(iss.Proc.Output(), s) {
			t.Errorf("the issuer's logs hold the secret %s", s[:8])
		}
	}
}
