package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/camview/relay"
)

// enrollCmd gives a relay an identity of its own, in two steps around the operator: the key
// and CSR made here (--name), then the bundle fleetctl viewer signed installed (--bundle).
func enrollCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("camview enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	identity := fs.String("identity", "", "the directory that keeps this relay's key, made 0700 (required)")
	name := fs.String("name", "", "make the key (once) and the CSR of viewer:<name>")
	bundle := fs.String("bundle", "", "install this viewer bundle (written by fleetctl viewer --csr) in --identity")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("enroll: unexpected argument %q", fs.Arg(0))
	case *identity == "":
		return errors.New("enroll: --identity DIR is required: the directory that keeps this relay's key")
	case *bundle != "" && *name != "":
		return errors.New("enroll: give --name (make the key and CSR) or --bundle (install the signed bundle), not both")
	case *bundle == "" && *name == "":
		return errors.New("enroll: give --name NAME to make the key and CSR of viewer:NAME, or --bundle FILE to install the bundle fleetctl viewer wrote")
	}
	if *bundle == "" {
		csr, err := relay.EnrollIdentity(*identity, *name)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		fmt.Fprintf(stdout, "key of viewer:%s in %s (it never leaves this machine); CSR written to %s\n", *name, *identity, csr)
		fmt.Fprintf(stdout, "Next: on the operator's machine, fleetctl viewer --csr %s; then here, camview enroll --identity %s --bundle viewer-%s.bundle.json\n", relay.IdentityCSRFile, *identity, *name)
		return nil
	}
	b, err := cappedfile.Read(*bundle, certs.MaxViewerBundleSize)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	id, err := relay.InstallIdentity(*identity, b, time.Now())
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	v := id.Bundle
	fmt.Fprintf(stdout, "installed viewer:%s in %s: certificate serial %s valid until %s, broker %s\n",
		v.Name, *identity, v.Cert.SerialNumber.Text(16), v.Cert.NotAfter.UTC().Format(time.RFC3339), v.Bundle.Broker)
	fmt.Fprintf(stdout, "Run camview serve --identity %s (or record): it needs no fleet directory.\n", *identity)
	return nil
}
