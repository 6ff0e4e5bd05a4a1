package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// need fails the test unless the program is installed, naming the Debian package to install.
func need(t *testing.T, prog, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(prog)
	if err != nil {
		t.Fatalf("%s not found: this test needs the Debian package %s (sudo apt-get install -y %s)", prog, debianPackage, debianPackage)
	}
	return path
}

// packagingDir is the repository's packaging directory.
const packagingDir = "../../packaging"

var (
	binsMu sync.Mutex
	bins   = map[string]string{} // "arm/6" -> binary
	binDir string
)

// tinyBinary returns a small static Linux Go binary for goarch (and goarm), built once per
// test run: mkdeb reads the target from a binary's build information, so the tests package
// real binaries.
func tinyBinary(t *testing.T, goarch, goarm string) string {
	t.Helper()
	goTool := need(t, "go", "golang-go (or a Go toolchain on PATH)")
	binsMu.Lock()
	defer binsMu.Unlock()
	key := goarch + "/" + goarm
	if b, ok := bins[key]; ok {
		return b
	}
	if binDir == "" {
		d, err := os.MkdirTemp("", "mkdeb-test-")
		if err != nil {
			t.Fatal(err)
		}
		binDir = d
		for name, text := range map[string]string{
			"go.mod":  "module tiny\n\ngo 1.26\n",
			"main.go": "package main\n\nfunc main() { println(\"tiny\") }\n",
		} {
			if err := os.WriteFile(filepath.Join(d, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	out := filepath.Join(binDir, "tiny-"+strings.ReplaceAll(key, "/", "v"))
	cmd := exec.Command(goTool, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = binDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm, "GOWORK=off", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build for %s: %v\n%s", key, err, b)
	}
	bins[key] = out
	return out
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// dpkgDeb runs dpkg-deb with args and returns its standard output.
func dpkgDeb(t *testing.T, args ...string) string {
	t.Helper()
	prog := need(t, "dpkg-deb", "dpkg")
	cmd := exec.Command(prog, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dpkg-deb %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
