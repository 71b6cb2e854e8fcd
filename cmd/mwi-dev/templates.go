package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"unicode"
)

//go:embed dev.yaml.tmpl
var resourcesTemplate string

//go:embed mwid.yaml.tmpl
var daemonTemplate string

// resourceData fills dev.yaml.tmpl.
type resourceData struct {
	Login string // the SSH login the dev role allows
}

// daemonData fills mwid.yaml.tmpl.
type daemonData struct {
	IssuerAddr  string // host:port
	CAPin       string // sha256:... as printed by mwi-issuer ca
	AgentSocket string
	APISocket   string
}

// render executes the template text with data. The template function quote
// writes a string as a YAML double-quoted scalar, so that any value is read
// back as the same string.
func render(name, text string, data any) ([]byte, error) {
	t, err := template.New(name).Option("missingkey=error").Funcs(template.FuncMap{
		"quote": quote,
	}).Parse(text)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// quote returns s as a YAML double-quoted scalar. A JSON string is one.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// checkLogin reports why login cannot be an SSH principal of the dev role.
func checkLogin(login string) error {
	if login == "" {
		return errors.New("the current user has no login name")
	}
	if strings.ContainsFunc(login, func(r rune) bool {
		return r == ',' || unicode.IsSpace(r) || unicode.IsControl(r)
	}) {
		return fmt.Errorf("login name %q cannot be an SSH principal (it has a comma, a space or a control character)", login)
	}
	return nil
}

// caInfo is what mwi-issuer ca prints.
type caInfo struct {
	Pin    string // ca_pin
	UserCA string // ssh_user_ca, in authorized_keys form
}

// parseCA reads the output of mwi-issuer ca: lines of the form "key: value".
func parseCA(out string) (caInfo, error) {
	var ci caInfo
	for line := range strings.Lines(out) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		switch k {
		case "ca_pin":
			ci.Pin = v
		case "ssh_user_ca":
			ci.UserCA = v
		}
	}
	if ci.Pin == "" || ci.UserCA == "" {
		return caInfo{}, fmt.Errorf("mwi-issuer ca printed no ca_pin or ssh_user_ca line:\n%s", out)
	}
	return ci, nil
}
