// Package diag holds what mwid's and mwi-issuer's diagnostics listeners
// share: the check of the address they listen on.
//
// A diagnostics listener serves /livez, /readyz and /metrics over plain
// HTTP without authentication, for the machine's own Prometheus and
// probes; it is off unless an address is given.
package diag

import (
	"fmt"
	"net"
)

// CheckAddr refuses a listen address that is not HOST:PORT, and one whose
// host is not a loopback address (an IP literal, or "localhost") unless
// allowRemote: what the listener tells (versions, credentials' expiry,
// refusals) is for the machine itself. allowFlag names how to allow
// another address, for the message.
func CheckAddr(addr string, allowRemote bool, allowFlag string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want HOST:PORT, such as 127.0.0.1:9090: %v", addr, err)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%q is not a loopback address: its metrics and health have no authentication; "+
		"use 127.0.0.1:PORT, or allow other addresses explicitly (%s)", addr, allowFlag)
}
