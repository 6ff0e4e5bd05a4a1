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
)

// viewerCmd signs the CSR of a viewer relay that made its own key (camview enroll) and writes
// its viewer bundle: the relay then runs with --identity and never holds the fleet directory.
func viewerCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("viewer", stderr)
	csrPath := fs.String("csr", "", "the viewer relay's CSR (from camview enroll --identity DIR --name NAME) (required)")
	out := fs.String("out", "", "where to write the viewer bundle (default viewer-<name>.bundle.json)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *csrPath == "" {
		return errors.New("viewer: --csr is required")
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
