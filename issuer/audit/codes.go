package audit

import (
	"fmt"
	"slices"
)

// An event's code is stable: it names the event and its outcome in every
// release, so that an operator can alert on it and search for it whatever
// the event is called or the record holds. It reads "MWI" NNNN X, as
// Teleport's "TJ001I": NNNN is the event's number and X its outcome, I for
// allowed, W for denied and S for the record that counts the denials left
// out (Suppressed). The thousands group the events: 1xxx are what bots ask
// for, 2xxx what administrators do, 3xxx requests refused before any
// decision.
//
// A number is never reused nor changed. An event that is not in the table
// is written with number 0000; TestEveryEventHasACode keeps that from
// happening.

// EventInfo describes one event of the audit log.
type EventInfo struct {
	Name   string // the record's "event"
	Number int    // of its code
	// Allowed and Denied say which outcomes the event's records have.
	Allowed, Denied bool
	Doc             string // what the record is, for the README's table
}

// events is the table of every event and its number. Keep the README's
// table of codes in step: TestREADMEListsEveryCode checks it.
var events = []EventInfo{
	{EventJoin, 1001, true, true, "a bot instance joins (token, ID token or bound key pair), with the certificates issued"},
	{EventJoinChallenge, 1002, true, true, "a bound key pair asks for a challenge to sign"},
	{EventRenew, 1003, true, true, "a bot instance renews its certificates over mutual TLS, with the certificates issued"},
	{EventNodes, 1004, false, true, "a bot's request for the hosts it may reach is refused"},
	{EventSSHRefused, 1005, false, true, "a host refused a login to an MWI certificate, as the host's mwid reports it"},
	{EventTokenCreate, 2001, true, true, "an administrator creates a one-time join token"},
	{EventTokenDelete, 2002, true, true, "an administrator removes a one-time join token"},
	{EventResourceCreate, 2003, true, true, "an administrator creates or replaces a stored resource"},
	{EventResourceDelete, 2004, true, true, "an administrator removes a stored resource"},
	{EventAdminIssue, 2005, true, true, "an administrator issues an admin identity"},
	{EventBotLock, 2006, true, true, "a bot is locked"},
	{EventBotUnlock, 2007, true, true, "a bot's lock is lifted"},
	{EventInstanceLock, 2008, true, true, "a bot instance is locked, by an administrator or by the issuer on a copied identity"},
	{EventInstanceUnlock, 2009, true, true, "a bot instance's lock is lifted"},
	{EventTokenLock, 2010, true, true, "the instances of a token resource are locked"},
	{EventTokenUnlock, 2011, true, true, "the lock of a token resource is lifted"},
	{EventCARotate, 2012, true, true, "an administrator moves a certificate authority's rotation to another phase"},
	{EventRequest, 3001, false, true, "a request refused before it reached a decision (a body that does not decode, a renewal without an identity)"},
	{EventTLS, 3002, false, true, "a TLS handshake refused, such as for a client certificate the issuer did not sign"},
	{EventAdmin, 3003, false, true, "a caller refused by the admin socket or the remote admin API"},
}

// Events returns every event of the audit log, in the order of their
// numbers.
func Events() []EventInfo {
	out := slices.Clone(events)
	slices.SortFunc(out, func(a, b EventInfo) int { return a.Number - b.Number })
	return out
}

// Codes returns the codes that event's records can have: allowed,
// denied and suppressed.
func (e EventInfo) Codes() []string {
	var out []string
	if e.Allowed {
		out = append(out, Code(e.Name, Allowed))
	}
	if e.Denied {
		out = append(out, Code(e.Name, Denied), Code(e.Name, Suppressed))
	}
	return out
}

// Code returns the code of a record of event with outcome, such as
// "MWI1001I" for an allowed join.
func Code(event, outcome string) string {
	return fmt.Sprintf("MWI%04d%s", numbers[event], outcomeLetter(outcome))
}

// numbers holds the number of each event by name.
var numbers = func() map[string]int {
	m := make(map[string]int, len(events))
	for _, e := range events {
		m[e.Name] = e.Number
	}
	return m
}()

func outcomeLetter(outcome string) string {
	switch outcome {
	case Allowed:
		return "I"
	case Suppressed:
		return "S"
	default:
		return "W"
	}
}
