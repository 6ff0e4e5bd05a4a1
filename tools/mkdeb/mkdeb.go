package main

import (
	"debug/buildinfo"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the "deb" packager
	"github.com/goreleaser/nfpm/v2/files"
)

// archs maps the Debian architectures mkdeb builds to the Go target their binary must be.
// Raspberry Pi OS's armhf is ARMv6 with hardware floating point (Debian's own armhf is ARMv7):
// the armhf package carries the GOARM=6 build so that one package runs on every Pi, Zero and
// Pi 1 included.
var archs = map[string]struct{ goarch, goarm string }{
	"armhf": {"arm", "6"},
	"arm64": {"arm64", ""},
	"amd64": {"amd64", ""},
}

const (
	defaultMaintainer = "camagent maintainers <camagent@localhost>"
	homepage          = "https://github.com/camagent/camagent"
)

// options are mkdeb's flags.
type options struct {
	version, arch    string
	bin, binFleetctl string
	out, packaging   string
	maintainer       string
	mtime            time.Time
}

func run(args []string, stdout, stderr io.Writer) error {
	opts, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	paths, err := build(opts)
	for _, p := range paths {
		fmt.Fprintln(stdout, p)
	}
	return err
}

func parseArgs(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("mkdeb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.version, "version", "", "package version: a release (v1.2.3), git describe output, or a commit hash")
	fs.StringVar(&o.arch, "arch", "", "Debian architecture: armhf (GOARM=6 binary), arm64 or amd64")
	fs.StringVar(&o.bin, "bin", "", "the camagent binary for --arch")
	fs.StringVar(&o.binFleetctl, "bin-fleetctl", "", "the fleetctl binary for --arch; builds the fleetctl package too")
	fs.StringVar(&o.out, "out", "dist", "directory to write the packages to")
	fs.StringVar(&o.packaging, "packaging", "packaging", "directory of the unit, the default configuration and the maintainer scripts")
	fs.StringVar(&o.maintainer, "maintainer", defaultMaintainer, "the packages' Maintainer field")
	mtime := fs.Int64("mtime", 0, "modification time of every file, in Unix seconds, for reproducible packages (make passes the commit time); 0: now")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.version == "":
		return o, errors.New("--version is required")
	case o.bin == "":
		return o, errors.New("--bin is required")
	}
	if _, ok := archs[o.arch]; !ok {
		return o, fmt.Errorf("--arch %q: want armhf, arm64 or amd64", o.arch)
	}
	o.mtime = time.Now().UTC().Truncate(time.Second)
	if *mtime != 0 {
		o.mtime = time.Unix(*mtime, 0).UTC()
	}
	return o, nil
}

// build writes the packages and returns their paths.
func build(o options) ([]string, error) {
	version, err := debVersion(o.version)
	if err != nil {
		return nil, err
	}
	if err := checkBinary(o.bin, o.arch); err != nil {
		return nil, fmt.Errorf("--bin: %w", err)
	}
	if o.binFleetctl != "" {
		if err := checkBinary(o.binFleetctl, o.arch); err != nil {
			return nil, fmt.Errorf("--bin-fleetctl: %w", err)
		}
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	pkg := func(name string) string { return filepath.Join(o.packaging, name) }
	for _, name := range []string{"camagent.service", "camagent.conf", "postinst", "prerm", "postrm", "README.md"} {
		if _, err := os.Stat(pkg(name)); err != nil {
			return nil, fmt.Errorf("--packaging %s: %w", o.packaging, err)
		}
	}

	camagent := &nfpm.Info{
		Name:        "camagent",
		Description: "camera agent: mTLS fleet client, credential rotation and end-to-end encrypted live video\nRuns as the hardened systemd service camagent.service under the camagent user.\nThe device's keys and state in /var/lib/camagent survive upgrades and removal;\npurge wipes them, as a factory reset does.",
		Section:     "net",
		Overridables: nfpm.Overridables{
			Depends: []string{"adduser"},
			Contents: files.Contents{
				file(o.bin, "/usr/bin/camagent", 0o755),
				file(pkg("camagent.service"), "/lib/systemd/system/camagent.service", 0o644),
				conffile(pkg("camagent.conf"), "/etc/camagent/camagent.conf"),
				file(pkg("README.md"), "/usr/share/doc/camagent/README.md", 0o644),
			},
			Scripts: nfpm.Scripts{
				PostInstall: pkg("postinst"),
				PreRemove:   pkg("prerm"),
				PostRemove:  pkg("postrm"),
			},
		},
	}
	packages := []*nfpm.Info{camagent}
	if o.binFleetctl != "" {
		for _, name := range fleetctlFiles {
			if _, err := os.Stat(pkg(name)); err != nil {
				return nil, fmt.Errorf("--packaging %s: %w", o.packaging, err)
			}
		}
		packages = append(packages, &nfpm.Info{
			Name:        "fleetctl",
			Description: "camagent fleet operator's tool and services\nEnrolls cameras, signs commands and grants, and runs the fleet's broker and certificate\nsigner, also as the hardened systemd services fleetctl-broker.service and\nfleetctl-signer@NAME.service (not enabled: they need the fleet directory in /var/lib/fleetctl).",
			Section:     "net",
			Overridables: nfpm.Overridables{
				Depends: []string{"adduser"},
				Contents: files.Contents{
					file(o.binFleetctl, "/usr/bin/fleetctl", 0o755),
					file(pkg("fleetctl-broker.service"), "/lib/systemd/system/fleetctl-broker.service", 0o644),
					file(pkg("fleetctl-signer@.service"), "/lib/systemd/system/fleetctl-signer@.service", 0o644),
					conffile(pkg("fleetctl.default"), "/etc/default/fleetctl"),
					file(pkg("README.md"), "/usr/share/doc/fleetctl/README.md", 0o644),
				},
				Scripts: nfpm.Scripts{
					PostInstall: pkg("fleetctl-postinst"),
					PreRemove:   pkg("fleetctl-prerm"),
					PostRemove:  pkg("fleetctl-postrm"),
				},
			},
		})
	}
	var paths []string
	for _, info := range packages {
		info.Arch = o.arch
		info.Platform = "linux"
		info.Version = version
		info.VersionSchema = "none" // debVersion made it a Debian version already
		info.Priority = "optional"
		info.Maintainer = o.maintainer
		info.Homepage = homepage
		info.MTime = o.mtime
		info.DisableGlobbing = true
		p, err := write(o.out, info)
		if err != nil {
			return paths, fmt.Errorf("package %s: %w", info.Name, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// fleetctlFiles are the files of packaging/ the fleetctl package is made of, besides the binary.
var fleetctlFiles = []string{"fleetctl-broker.service", "fleetctl-signer@.service", "fleetctl.default", "fleetctl-postinst", "fleetctl-prerm", "fleetctl-postrm", "README.md"}

func file(src, dst string, mode os.FileMode) *files.Content {
	return &files.Content{Source: src, Destination: dst, Type: files.TypeFile,
		FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode}}
}

// conffile is a configuration file the administrator may edit: dpkg keeps the edits on
// upgrade (asking when the packaged default changed too) and removes the file on purge.
func conffile(src, dst string) *files.Content {
	c := file(src, dst, 0o644)
	c.Type = files.TypeConfigNoReplace
	return c
}

// write packages info into dir under its conventional name, atomically.
func write(dir string, info *nfpm.Info) (string, error) {
	packager, err := nfpm.Get("deb")
	if err != nil {
		return "", err
	}
	info = nfpm.WithDefaults(info)
	name := packager.ConventionalFileName(info)
	f, err := os.CreateTemp(dir, ".mkdeb-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if err := packager.Package(info, f); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	path := filepath.Join(dir, name)
	if err := os.Rename(f.Name(), path); err != nil {
		return "", err
	}
	return path, nil
}

// checkBinary checks that bin is a static Linux Go binary for the Debian architecture arch,
// from its embedded build information.
func checkBinary(bin, arch string) error {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("%s: not a Go binary with build information: %w", bin, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	want := archs[arch]
	got := fmt.Sprintf("GOOS=%s GOARCH=%s", settings["GOOS"], settings["GOARCH"])
	if settings["GOOS"] != "linux" || settings["GOARCH"] != want.goarch {
		return fmt.Errorf("%s is a %s binary; the %s package needs GOOS=linux GOARCH=%s", bin, got, arch, want.goarch)
	}
	if want.goarm != "" {
		if goarm, _, _ := strings.Cut(settings["GOARM"], ","); goarm != want.goarm {
			return fmt.Errorf("%s is built with GOARM=%s; the %s package carries the GOARM=%s build so that it runs on every Raspberry Pi (Pi Zero and Pi 1 are ARMv6)",
				bin, settings["GOARM"], arch, want.goarm)
		}
	}
	if settings["CGO_ENABLED"] != "0" {
		return fmt.Errorf("%s is built with CGO_ENABLED=%q; build it with CGO_ENABLED=0 (the package declares no C library dependency)", bin, settings["CGO_ENABLED"])
	}
	return nil
}

var (
	// describeRE matches git describe output after a tag: 1.2.3-4-gabc1234.
	describeRE = regexp.MustCompile(`^([0-9][0-9A-Za-z.]*)-([0-9]+)-g([0-9a-f]{4,40})$`)
	// hashRE matches git describe --always output without a tag: a bare commit hash.
	hashRE = regexp.MustCompile(`^[0-9a-f]{7,40}$`)
	// debianRE is a Debian upstream version without an epoch or a revision.
	debianRE = regexp.MustCompile(`^[0-9][0-9A-Za-z.+~]*$`)
)

// debVersion turns a release tag or git describe output into a Debian version that sorts
// correctly:
//
//	v1.2.3                → 1.2.3
//	v1.2.3-rc.1           → 1.2.3~rc.1            (before 1.2.3)
//	v1.2.3-4-gabc1234     → 1.2.3+git4.gabc1234   (after 1.2.3)
//	abc1234 (no tag yet)  → 0.0.0+gabc1234
//	dev                   → 0.0.0~dev
//
// and a "-dirty" suffix becomes ".dirty" (or "+dirty").
func debVersion(v string) (string, error) {
	in := v
	v = strings.TrimPrefix(v, "v")
	dirty := strings.HasSuffix(v, "-dirty")
	v = strings.TrimSuffix(v, "-dirty")
	var out string
	switch {
	case v == "":
		return "", fmt.Errorf("--version %q: empty", in)
	case hashRE.MatchString(v) && !strings.Contains(v, "."):
		out = "0.0.0+g" + v
	case describeRE.MatchString(v):
		m := describeRE.FindStringSubmatch(v)
		out = m[1] + "+git" + m[2] + ".g" + m[3]
	case v != "" && v[0] >= '0' && v[0] <= '9':
		base, pre, hasPre := strings.Cut(v, "-")
		out = base
		if hasPre {
			out += "~" + strings.ReplaceAll(pre, "-", ".")
		}
	default:
		out = "0.0.0~" + strings.ReplaceAll(v, "-", ".")
	}
	if dirty {
		if strings.Contains(out, "+") {
			out += ".dirty"
		} else {
			out += "+dirty"
		}
	}
	if !debianRE.MatchString(out) {
		return "", fmt.Errorf("--version %q: not usable as a Debian version (got %q)", in, out)
	}
	return out, nil
}
