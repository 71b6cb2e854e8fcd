package authority

// SetMaxAnonymousChallenges sets the bound on the anonymous challenges a
// made in the last ChallengeTTL, so that tests can reach it quickly.
func (a *Authority) SetMaxAnonymousChallenges(n int) {
	a.challengeLimits.mu.Lock()
	defer a.challengeLimits.mu.Unlock()
	a.challengeLimits.max = n
}
