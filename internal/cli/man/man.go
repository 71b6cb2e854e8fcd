// Package man writes the manual pages of a program's command tree, from
// the definitions its help comes from.
//
// It is apart from package cli so that the programs do not carry the
// Markdown and roff renderers it needs (about a megabyte, and a
// millisecond and a half at every start of mwictl, which kubectl runs for
// each credential): each program's tests call Generate, and make man runs
// those tests with MWI_MAN_DIR set.
package man

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/mwi-project/mwi/internal/version"
)

// DirEnv names the environment variable that tells a program's man page
// test where to write the pages; unset, the test writes them into a
// temporary directory.
const DirEnv = "MWI_MAN_DIR"

// Generate writes the manual pages of root and of every command under it,
// in section 1, into dir, which it makes if needed: root.1, then
// root-command.1 and so on.
func Generate(root *cobra.Command, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root.DisableAutoGenTag = true // no date-stamped footer in every page
	return doc.GenManTreeFromOpts(root, doc.GenManTreeOptions{
		Header: &doc.GenManHeader{
			Section: "1",
			Source:  "MWI " + version.Get().Version,
			Manual:  "MWI Manual",
		},
		Path:             dir,
		CommandSeparator: "-",
	})
}

// Dir returns the directory named by DirEnv, or def when it is unset.
func Dir(def string) string {
	if d := os.Getenv(DirEnv); d != "" {
		return d
	}
	return def
}
