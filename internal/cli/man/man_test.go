package man

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"

	"github.com/mwi-project/mwi/internal/cli"
)

func TestGenerate(t *testing.T) {
	root := &cobra.Command{Use: "prog", Short: "a test program"}
	group := &cobra.Command{Use: "group", Short: "a group"}
	group.AddCommand(&cobra.Command{Use: "sub", Short: "a sub", Args: cli.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }})
	run := &cobra.Command{Use: "run", Short: "run it", Args: cli.NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	run.Flags().String("output", "", "write to `FILE`")
	root.AddCommand(run, group)
	var o, e bytes.Buffer
	cli.Prepare(root, &o, &e)

	dir := filepath.Join(t.TempDir(), "man")
	if err := Generate(root, dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"prog.1", "prog-run.1", "prog-group.1", "prog-group-sub.1", "prog-completion-bash.1"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if !bytes.Contains(data, []byte(".TH ")) || !bytes.Contains(data, []byte(`"MWI Manual"`)) {
			t.Errorf("%s is not a manual page:\n%.300s", name, data)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "prog-run.1")); !bytes.Contains(data, []byte(`\fB--output\fP`)) {
		t.Errorf("prog-run.1 does not describe --output:\n%s", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "prog-help.1")); err == nil {
		t.Error("a page for the help command")
	}
	// A directory that cannot be made is an error.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o600)
	if err := Generate(root, filepath.Join(file, "man")); err == nil {
		t.Error("Generate under a regular file succeeded")
	}
}
