package config

import (
	"strings"
	"testing"
)

// TestTBotAddressVariants gives proxy_server values that are not an
// address to dial (userinfo, paths, queries, other schemes, bad ports) and
// IPv6 literals, which are.
func TestTBotAddressVariants(t *testing.T) {
	with := func(addr string) string {
		return strings.Replace(tbotBase, "proxy_server: issuer.example.com:7443", "proxy_server: '"+addr+"'", 1)
	}
	for _, bad := range []string{
		"https://user:pass@issuer.example.com:443", "user@issuer.example.com:443", "https://issuer.example.com/path",
		"https://issuer.example.com:443/?x=1", "issuer.example.com:443#f", "http://issuer.example.com", "HTTPS://issuer.example.com",
		"issuer.example.com:99999", "issuer.example.com:0", "issuer.example.com:https", "issuer.example.com:-1", ":443", "[]:443",
		"issuer example.com:443", "issuer.example.com:443\n", "[::1", "::1]:443", "https://",
	} {
		if c, err := Parse("tbot.yaml", []byte(with(bad))); err == nil {
			t.Errorf("proxy_server %q: address %q, want refused", bad, c.Issuer.Address)
		} else if !strings.Contains(err.Error(), "tbot.yaml:2: proxy_server") {
			t.Errorf("proxy_server %q: %v, want refused at tbot.yaml:2", bad, err)
		}
	}
	for addr, want := range map[string]string{
		"[::1]:7443":                  "[::1]:7443",
		"::1":                         "[::1]:443",
		"https://[::1]":               "[::1]:443",
		"https://[2001:db8::1]:8443/": "[2001:db8::1]:8443",
		"https://issuer.example.com":  "issuer.example.com:443",
		"10.0.0.1":                    "10.0.0.1:443",
	} {
		c, err := Parse("tbot.yaml", []byte(with(addr)))
		if err != nil {
			t.Errorf("proxy_server %q: %v", addr, err)
		} else if c.Issuer.Address != want {
			t.Errorf("proxy_server %q: address %q, want %q", addr, c.Issuer.Address, want)
		}
	}
}

// TestIssuerAddressPort refuses, in mwid's own format too, an issuer
// address whose port is no port number.
func TestIssuerAddressPort(t *testing.T) {
	for _, addr := range []string{"i:99999", "i:0", "i:https", "i:-1", "i:", "i:08443"} {
		data := "version: v1\nissuer:\n  address: '" + addr + "'\n"
		if _, err := Parse("mwid.yaml", []byte(data)); err == nil || !strings.Contains(err.Error(), "issuer.address") {
			t.Errorf("issuer.address %q: %v, want refused", addr, err)
		}
	}
}
