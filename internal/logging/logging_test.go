package logging

import (
	"bytes"
	"strings"
	"testing"
)

func TestSwitchFormatAndLevel(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(&buf, "text", "info")
	if err != nil {
		t.Fatal(err)
	}
	child := l.With("component", "agent")
	child.Debug("hidden")
	child.Info("as text")
	if err := l.SetFormat("json"); err != nil {
		t.Fatal(err)
	}
	if err := l.SetLevel("debug"); err != nil {
		t.Fatal(err)
	}
	child.Debug("as json")
	out := buf.String()
	if strings.Contains(out, "hidden") {
		t.Error("a debug line was written at level info")
	}
	if !strings.Contains(out, "msg=\"as text\" component=agent") {
		t.Errorf("text line missing or without the child's attribute:\n%s", out)
	}
	if !strings.Contains(out, `"msg":"as json","component":"agent"`) {
		t.Errorf("a logger made before the format change did not follow it:\n%s", out)
	}
	for _, bad := range [][2]string{{"xml", "info"}, {"text", "loud"}} {
		if _, err := New(&buf, bad[0], bad[1]); err == nil {
			t.Errorf("New(%q, %q) succeeded", bad[0], bad[1])
		}
	}
}
