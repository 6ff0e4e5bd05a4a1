package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// camagentBin is the real camagent binary, built once for the crash tests.
var camagentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "camagent-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	camagentBin = filepath.Join(dir, "camagent")
	build := exec.Command("go", "build", "-o", camagentBin, "github.com/camagent/camagent/agent/cmd/camagent")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build camagent:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
