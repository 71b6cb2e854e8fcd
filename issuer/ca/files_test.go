package ca

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestCreateKubeCANeverReplaces checks that creating the Kubernetes client
// CA never replaces a file that appeared after Load looked, such as a key
// another issuer process has just written, nor writes through a link.
func TestCreateKubeCANeverReplaces(t *testing.T) {
	for _, name := range []string{kubeKeyFile, kubeCertFile, adminKeyFile, adminCertFile} {
		l := kubeAuthority
		if name == adminKeyFile || name == adminCertFile {
			l = adminAuthority
		}
		for _, link := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s link=%v", name, link), func(t *testing.T) {
				dir := t.TempDir()
				path, target := filepath.Join(dir, name), filepath.Join(t.TempDir(), "target")
				if link {
					if err := os.Symlink(target, path); err != nil {
						t.Fatal(err)
					}
				} else if err := os.WriteFile(path, []byte("precious"), 0o600); err != nil {
					t.Fatal(err)
				}
				err := createLazyCA(dir, l)
				if !errors.Is(err, fs.ErrExist) {
					t.Fatalf("createLazyCA over an existing %s = %v, want an error wrapping fs.ErrExist", name, err)
				}
				if data, _ := os.ReadFile(path); !link && string(data) != "precious" {
					t.Errorf("%s changed to %q", name, data)
				}
				if _, err := os.Lstat(target); err == nil {
					t.Errorf("createLazyCA wrote through a link at %s", name)
				}
			})
		}
	}
}
