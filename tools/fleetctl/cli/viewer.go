package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// viewerCmd signs the CSR of a viewer relay that made its own key (camview enroll) and writes
// its viewer bundle: the relay then runs with --identity and never holds the fleet directory.
// With --revoke it revokes a relay identity instead.
func viewerCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("viewer", stderr)
	csrPath := fs.String("csr", "", "the viewer relay's CSR (from camview enroll --identity DIR --name NAME): sign it")
	out := fs.String("out", "", "where to write the viewer bundle (default viewer-<name>.bundle.json)")
	revoke := fs.String("revoke", "", "revoke every certificate of viewer:<name> instead (a relay that was broken into, or retired)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("viewer: unexpected argument %q", fs.Arg(0))
	case (*csrPath == "") == (*revoke == ""):
		return errors.New("viewer: give --csr FILE (sign a relay's CSR) or --revoke NAME")
	case *revoke != "":
		return revokeViewer(*dir, *revoke, stdout, stderr)
	}
	csr, err := cappedfile.Read(*csrPath, certs.MaxCSRSize)
	if err != nil {
		return fmt.Errorf("viewer: %w", err)
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	defer f.Close()
	b, c, err := f.IssueViewer(csr, time.Now())
	if err != nil {
		return err
	}
	path := *out
	if path == "" {
		path = strings.ReplaceAll(certs.CertIdentity(c), ":", "-") + ".bundle.json"
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("viewer: %w", err)
	}
	fmt.Fprintf(stdout, "issued %s: certificate serial %s valid until %s; bundle written to %s (it holds nothing secret)\n",
		certs.CertIdentity(c), c.SerialNumber.Text(16), c.NotAfter.UTC().Format(time.RFC3339), path)
	fmt.Fprintf(stdout, "Install it with camview enroll --identity DIR --bundle %s. With Mosquitto, run fleetctl mosquitto-config again and send it SIGHUP so the ACL knows %s.\n", path, certs.CertIdentity(c))
	return nil
}

// revokeViewer revokes viewer:<name>'s certificates and writes the CRL.
func revokeViewer(dir, name string, stdout, stderr io.Writer) error {
	f, err := fleet.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	now := time.Now()
	serials, err := f.RevokeViewer(name, now)
	if err != nil {
		return err
	}
	if len(serials) == 0 {
		fmt.Fprintf(stdout, "viewer:%s holds no certificate that is valid and not revoked; nothing to do\n", name)
		// Run again, it may follow a run that stopped after the revocation and before the
		// CRL: write the CRL again where it can be.
		if f.HasCAKey() {
			if err := writeCRL(f, stderr, now); err != nil {
				return fmt.Errorf("viewer: the CRL was not written again (run fleetctl crl): %w", err)
			}
		}
		return nil
	}
	if err := writeCRL(f, stderr, now); err != nil {
		return fmt.Errorf("viewer: revoked, but the CRL was not written (run fleetctl crl): %w", err)
	}
	hex := make([]string, len(serials))
	for i, s := range serials {
		hex[i] = registry.SerialHex(s)
	}
	fmt.Fprintf(stdout, "revoked viewer:%s: serial %s\n", name, strings.Join(hex, ", "))
	fmt.Fprintf(stdout, "The embedded broker refuses it at once and cuts its sessions; Mosquitto reads %s when it restarts: restart it.\n", f.CRLPath())
	return nil
}
