package main

import (
	"debug/buildinfo"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBuildPackagesForEachArchitecture(t *testing.T) {
	// The fleetctl package is the same on every architecture: one is enough, and packaging is
	// slow under the race detector.
	for _, tc := range []struct {
		arch, goarch, goarm string
		fleetctl            bool
	}{
		{"armhf", "arm", "6", true},
		{"arm64", "arm64", "", false},
		{"amd64", "amd64", "", false},
	} {
		t.Run("the "+tc.arch+" package carries the "+tc.goarch+tc.goarm+" binary, the unit, the config and the scripts", func(t *testing.T) {
			t.Parallel()
			bin := tinyBinary(t, tc.goarch, tc.goarm)
			out := t.TempDir()
			args := []string{"--version", "v1.2.3-4-gabc1234", "--arch", tc.arch, "--bin", bin,
				"--out", out, "--packaging", packagingDir, "--mtime", "1700000000"}
			if tc.fleetctl {
				args = append(args, "--bin-fleetctl", bin)
			}
			var stdout strings.Builder
			if err := run(args, &stdout, io.Discard); err != nil {
				t.Fatal(err)
			}
			camagent := filepath.Join(out, "camagent_1.2.3+git4.gabc1234_"+tc.arch+".deb")
			fleetctl := filepath.Join(out, "fleetctl_1.2.3+git4.gabc1234_"+tc.arch+".deb")
			want := camagent + "\n"
			if tc.fleetctl {
				want += fleetctl + "\n"
			}
			if got := stdout.String(); got != want {
				t.Errorf("printed %q, want %q", got, want)
			}

			// dpkg-deb -I: the control fields.
			fields := dpkgDeb(t, "-f", camagent, "Package", "Version", "Architecture", "Depends")
			for _, want := range []string{"Package: camagent", "Version: 1.2.3+git4.gabc1234", "Architecture: " + tc.arch, "Depends: adduser"} {
				if !strings.Contains(fields, want+"\n") {
					t.Errorf("control lacks %q:\n%s", want, fields)
				}
			}
			info := dpkgDeb(t, "-I", camagent)
			for _, member := range []string{"conffiles", "control", "md5sums", "postinst", "prerm", "postrm"} {
				if !strings.Contains(info, " "+member+" ") {
					t.Errorf("control archive lacks %s:\n%s", member, info)
				}
			}

			// The control archive: conffiles, and the maintainer scripts as written, executable.
			control := t.TempDir()
			dpkgDeb(t, "-e", camagent, control)
			if b, _ := os.ReadFile(filepath.Join(control, "conffiles")); string(b) != "/etc/camagent/camagent.conf\n" {
				t.Errorf("conffiles = %q, want the configuration file only", b)
			}
			for _, script := range []string{"postinst", "prerm", "postrm"} {
				got, err := os.ReadFile(filepath.Join(control, script))
				if err != nil {
					t.Fatal(err)
				}
				want, _ := os.ReadFile(filepath.Join(packagingDir, script))
				if string(got) != string(want) {
					t.Errorf("%s differs from packaging/%s", script, script)
				}
				if fi, _ := os.Stat(filepath.Join(control, script)); fi.Mode().Perm() != 0o755 {
					t.Errorf("%s mode %v, want 0755", script, fi.Mode().Perm())
				}
			}

			// dpkg-deb -c: paths, modes and owners. Nothing under /var/lib/camagent: dpkg never
			// owns the device's keys, so no package operation can delete them.
			files := contents(t, camagent)
			for path, want := range map[string]string{
				"./usr/bin/camagent":                    "-rwxr-xr-x root/root",
				"./lib/systemd/system/camagent.service": "-rw-r--r-- root/root",
				"./etc/camagent/camagent.conf":          "-rw-r--r-- root/root",
				"./usr/share/doc/camagent/README.md":    "-rw-r--r-- root/root",
				"./etc/camagent/":                       "drwxr-xr-x root/root",
			} {
				if got := files[path]; got != want {
					t.Errorf("%s: %q, want %q", path, got, want)
				}
			}
			for path, modeOwner := range files {
				if strings.HasPrefix(path, "./var/") {
					t.Errorf("the package ships %s", path)
				}
				if !strings.HasSuffix(modeOwner, " root/root") {
					t.Errorf("%s is not owned by root: %s", path, modeOwner)
				}
			}

			// The binary inside is the one for the architecture.
			data := t.TempDir()
			dpkgDeb(t, "-x", camagent, data)
			bi, err := buildinfo.ReadFile(filepath.Join(data, "usr/bin/camagent"))
			if err != nil {
				t.Fatal(err)
			}
			var goarch, goarm string
			for _, s := range bi.Settings {
				switch s.Key {
				case "GOARCH":
					goarch = s.Value
				case "GOARM":
					goarm = s.Value
				}
			}
			if goarch != tc.goarch || goarm != tc.goarm {
				t.Errorf("packaged binary is GOARCH=%s GOARM=%s, want %s %s", goarch, goarm, tc.goarch, tc.goarm)
			}

			if !tc.fleetctl {
				return
			}
			// The fleetctl package: the tool, its two services (not enabled by the scripts), their
			// defaults file, and nothing under /var: the fleet directory is the operator's.
			fields = dpkgDeb(t, "-f", fleetctl, "Package", "Architecture", "Depends")
			if want := "Package: fleetctl\nArchitecture: " + tc.arch + "\nDepends: adduser\n"; fields != want {
				t.Errorf("fleetctl control:\n%s\nwant\n%s", fields, want)
			}
			var regular []string
			for path, modeOwner := range contents(t, fleetctl) {
				if !strings.HasPrefix(modeOwner, "d") {
					regular = append(regular, path+" "+modeOwner)
				}
			}
			slices.Sort(regular)
			wantFiles := []string{
				"./etc/default/fleetctl -rw-r--r-- root/root",
				"./lib/systemd/system/fleetctl-broker.service -rw-r--r-- root/root",
				"./lib/systemd/system/fleetctl-signer@.service -rw-r--r-- root/root",
				"./usr/bin/fleetctl -rwxr-xr-x root/root",
				"./usr/share/doc/fleetctl/README.md -rw-r--r-- root/root",
			}
			if !slices.Equal(regular, wantFiles) {
				t.Errorf("fleetctl files:\n  %s\nwant:\n  %s", strings.Join(regular, "\n  "), strings.Join(wantFiles, "\n  "))
			}
			fcontrol := t.TempDir()
			dpkgDeb(t, "-e", fleetctl, fcontrol)
			if b, _ := os.ReadFile(filepath.Join(fcontrol, "conffiles")); string(b) != "/etc/default/fleetctl\n" {
				t.Errorf("fleetctl conffiles = %q, want the defaults file only", b)
			}
			for _, script := range []string{"postinst", "prerm", "postrm"} {
				got, err := os.ReadFile(filepath.Join(fcontrol, script))
				if err != nil {
					t.Fatal(err)
				}
				if want, _ := os.ReadFile(filepath.Join(packagingDir, "fleetctl-"+script)); string(got) != string(want) {
					t.Errorf("fleetctl's %s differs from packaging/fleetctl-%s", script, script)
				}
				if fi, _ := os.Stat(filepath.Join(fcontrol, script)); fi.Mode().Perm() != 0o755 {
					t.Errorf("fleetctl's %s mode %v, want 0755", script, fi.Mode().Perm())
				}
			}
		})
	}
}

// contents maps each path in the package's data archive to its mode and owner, as dpkg-deb -c
// prints them ("-rwxr-xr-x root/root").
func contents(t *testing.T, deb string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(dpkgDeb(t, "-c", deb)), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		files[f[len(f)-1]] = f[0] + " " + f[1]
	}
	return files
}

func TestRefusedBinaries(t *testing.T) {
	for _, tc := range []struct {
		name, arch, goarch, goarm, mention string
	}{
		{"an ARMv7 binary cannot go into armhf: Pi Zero and Pi 1 are ARMv6", "armhf", "arm", "7", "GOARM=7"},
		{"an arm64 binary cannot go into amd64", "amd64", "arm64", "", "GOARCH=arm64"},
		{"an amd64 binary cannot go into arm64", "arm64", "amd64", "", "GOARCH=amd64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := t.TempDir()
			err := run([]string{"--version", "1.0.0", "--arch", tc.arch, "--bin", tinyBinary(t, tc.goarch, tc.goarm),
				"--out", out, "--packaging", packagingDir}, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("err = %v, want a refusal mentioning %s", err, tc.mention)
			}
			if left, _ := os.ReadDir(out); len(left) > 0 {
				t.Errorf("left %d files behind", len(left))
			}
		})
	}
	t.Run("a file that is not a Go binary is refused", func(t *testing.T) {
		err := run([]string{"--version", "1.0.0", "--arch", "amd64", "--bin", filepath.Join(packagingDir, "postinst"),
			"--out", t.TempDir(), "--packaging", packagingDir}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "not a Go binary") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		mention string
	}{
		{"the version is required", []string{"--arch", "amd64", "--bin", "x"}, "--version"},
		{"the binary is required", []string{"--version", "1", "--arch", "amd64"}, "--bin"},
		{"the architecture must be a Debian one mkdeb knows", []string{"--version", "1", "--arch", "arm", "--bin", "x"}, `--arch "arm"`},
		{"a version Debian cannot use is refused", []string{"--version", "1.0 beta", "--arch", "amd64", "--bin", "x"}, "--version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("err = %v, want one mentioning %s", err, tc.mention)
			}
		})
	}
}

func TestDebVersion(t *testing.T) {
	for in, want := range map[string]string{
		"v1.2.3":                  "1.2.3",
		"1.2.3":                   "1.2.3",
		"v1.2.3-rc.1":             "1.2.3~rc.1",
		"v1.2.3-rc1-dirty":        "1.2.3~rc1+dirty",
		"v1.2.3-4-gabc1234":       "1.2.3+git4.gabc1234",
		"v1.2.3-4-gabc1234-dirty": "1.2.3+git4.gabc1234.dirty",
		"v1.2.3-dirty":            "1.2.3+dirty",
		"898a22f":                 "0.0.0+g898a22f",
		"898a22f-dirty":           "0.0.0+g898a22f.dirty",
		"1234567":                 "0.0.0+g1234567",
		"dev":                     "0.0.0~dev",
	} {
		got, err := debVersion(in)
		if err != nil || got != want {
			t.Errorf("debVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "1.0 beta", "v1.2.3_x", "ünïcode"} {
		if got, err := debVersion(bad); err == nil {
			t.Errorf("debVersion(%q) = %q, want an error", bad, got)
		}
	}
}

// TestVersionsSortLikeReleases checks with dpkg itself that the versions debVersion makes
// order as the releases do.
func TestVersionsSortLikeReleases(t *testing.T) {
	dpkg := need(t, "dpkg", "dpkg")
	order := []string{"dev", "898a22f", "v1.2.3-rc.1", "v1.2.3", "v1.2.3-dirty", "v1.2.3-4-gabc1234", "v1.2.4"}
	for i := 0; i+1 < len(order); i++ {
		a, _ := debVersion(order[i])
		b, _ := debVersion(order[i+1])
		if err := runQuiet(dpkg, "--compare-versions", a, "lt", b); err != nil {
			t.Errorf("dpkg does not order %s (%s) before %s (%s)", a, order[i], b, order[i+1])
		}
	}
}
