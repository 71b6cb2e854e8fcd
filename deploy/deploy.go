// Package deploy holds what an operator deploys beside MWI's programs to
// watch them: Prometheus alert rules (prometheus/mwi-alerts.yml, with
// their promtool unit tests) and a Grafana dashboard
// (grafana/mwi-dashboard.json). It is a Go package only so that tests can
// check the files against the metrics the programs export.
package deploy

import (
	"embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"

	"go.yaml.in/yaml/v3"
)

// Files are the alert rules and the dashboard.
//
//go:embed prometheus/mwi-alerts.yml grafana/mwi-dashboard.json
var Files embed.FS

// Paths of the files in Files.
const (
	RulesFile     = "prometheus/mwi-alerts.yml"
	DashboardFile = "grafana/mwi-dashboard.json"
)

// Rules is the part of a Prometheus rule file that the tests read.
type Rules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// Dashboard is the part of a Grafana dashboard that the tests read.
type Dashboard struct {
	UID    string `json:"uid"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

// LoadRules reads the alert rules.
func LoadRules() (*Rules, error) {
	data, err := Files.ReadFile(RulesFile)
	if err != nil {
		return nil, err
	}
	var r Rules
	if err := yaml.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", RulesFile, err)
	}
	return &r, nil
}

// LoadDashboard reads the dashboard.
func LoadDashboard() (*Dashboard, error) {
	data, err := Files.ReadFile(DashboardFile)
	if err != nil {
		return nil, err
	}
	var d Dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", DashboardFile, err)
	}
	return &d, nil
}

// Exprs returns every PromQL expression of the rules and the dashboard,
// each with where it is.
func Exprs() (map[string]string, error) {
	r, err := LoadRules()
	if err != nil {
		return nil, err
	}
	d, err := LoadDashboard()
	if err != nil {
		return nil, err
	}
	exprs := map[string]string{}
	for _, g := range r.Groups {
		for i, rule := range g.Rules {
			exprs[fmt.Sprintf("%s: group %s rule %d (%s)", RulesFile, g.Name, i, rule.Alert)] = rule.Expr
		}
	}
	for _, p := range d.Panels {
		for _, t := range p.Targets {
			exprs[fmt.Sprintf("%s: panel %d (%s) target %s", DashboardFile, p.ID, p.Title, t.RefID)] = t.Expr
		}
	}
	return exprs, nil
}

// metricName matches the names of MWI's metrics in an expression; a
// Grafana variable such as $mwid_job is not one.
var metricName = regexp.MustCompile(`(?:^|[^$\w])((?:mwid|mwi_issuer)_[a-z0-9_]*[a-z0-9])`)

// MetricNames returns the sorted names of MWI's metrics that expr uses,
// as written: a histogram's series end in _bucket, _sum or _count.
func MetricNames(expr string) []string {
	var names []string
	for _, m := range metricName.FindAllStringSubmatch(expr, -1) {
		if !slices.Contains(names, m[1]) {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return names
}
