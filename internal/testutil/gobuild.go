package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModuleRoot is cellplane's module root, found from the working directory
// of a test (a package directory) upwards.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			if !strings.Contains(string(b), "module github.com/cellplane/cellplane\n") {
				return "", errors.New(dir + "/go.mod is not cellplane's")
			}
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cellplane's go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// GoBuild compiles each package of the module (a path like
// "./cmd/cellplane") into dir with the go command on PATH, for tests that
// run the binaries (test/e2e, test/faults). It returns the binaries'
// paths by package, each named after its package's last element.
func GoBuild(ctx context.Context, dir string, pkgs ...string) (map[string]string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return nil, fmt.Errorf("the go command is not on PATH: %w", err)
	}
	out := map[string]string{}
	for _, pkg := range pkgs {
		bin := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, pkg)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
		}
		out[pkg] = bin
	}
	return out, nil
}
