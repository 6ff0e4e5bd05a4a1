package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// replaceCmd gives the operator or the signer identity a new key and certificate and revokes
// every earlier certificate of it: the answer to a lost laptop or a broken-into signer host.
func replaceCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("replace", stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: fleetctl replace [--dir DIR] operator|signer|broker

Gives the fleet's operator (operator:`+fleet.DefaultOperator+`) or signer (signer:`+fleet.DefaultSigner+`) identity a new key and
certificate in the fleet directory, then revokes every earlier certificate of it that has not
expired, so a copy of its key on a lost or broken-into machine no longer gets in. The embedded
broker refuses those at once and cuts their sessions; Mosquitto once restarted with the CRL
written here. Running fleetctl serve instances present the new certificate from their next
connection.

broker gives the broker (broker/server.crt and broker/server.key) a new key and certificate for
the same names. Nothing is revoked: the old certificate is retired by a key set, once every
broker presents the new one: restart the brokers with it, then fleetctl keys rotate
--retire-brokers and fleetctl breach --incident ID --keyset FILE.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("replace: name one identity: operator, signer or broker")
	}
	var role certs.Role
	switch fs.Arg(0) {
	case "operator":
		role = certs.RoleOperator
	case "signer":
		role = certs.RoleSigner
	case "broker":
		role = certs.RoleServer
	default:
		return fmt.Errorf("replace: %q: give operator, signer or broker (a device: fleetctl rotate or retire; a viewer relay: fleetctl viewer --revoke; the online signing keys: fleetctl keys rotate)", fs.Arg(0))
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	defer f.Close()
	now := time.Now()
	if role == certs.RoleServer {
		return replaceBroker(f, *dir, now, stdout)
	}
	res, err := f.Replace(role, now)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "replaced %s: new certificate serial %s, valid until %s\n", res.Identity, registry.SerialHex(res.Cert.SerialNumber), res.Cert.NotAfter.UTC().Format(time.DateOnly))
	if len(res.Revoked) == 0 {
		fmt.Fprintf(stdout, "no earlier certificate of %s was valid and not revoked\n", res.Identity)
		return nil
	}
	if err := writeCRL(f, stderr, now); err != nil {
		return fmt.Errorf("replace: revoked, but the CRL was not written (run fleetctl crl): %w", err)
	}
	hex := make([]string, len(res.Revoked))
	for i, s := range res.Revoked {
		hex[i] = registry.SerialHex(s)
	}
	fmt.Fprintf(stdout, "revoked %d earlier certificate(s) of %s: serial %s\n", len(res.Revoked), res.Identity, strings.Join(hex, ", "))
	fmt.Fprintf(stdout, "The embedded broker refuses them at once and cuts their sessions; Mosquitto reads %s when it restarts: restart it.\n", f.CRLPath())
	switch role {
	case certs.RoleOperator:
		fmt.Fprintf(stdout, "Machines that run fleetctl from another copy of the fleet directory need the new %s and its key.\n", filepath.Join("operator", "operator.crt"))
	case certs.RoleSigner:
		fmt.Fprintf(stdout, "fleetctl serve instances on this fleet directory present the new certificate from their next connection; a signer host with a copy of its own needs the new %s and its key.\n", filepath.Join("signer", "signer.crt"))
	}
	fmt.Fprintln(stdout, "If that machine also held the command or grant signing keys, replace those too: fleetctl keys rotate, then fleetctl breach --keyset.")
	return nil
}

// replaceBroker gives the broker a new key and certificate and says what to do next: the
// runbook of docs/protocol.md, "Retiring a broker certificate".
func replaceBroker(f *fleet.Fleet, dir string, now time.Time, stdout io.Writer) error {
	res, err := f.ReplaceBroker(now)
	if err != nil {
		return err
	}
	c := res.Cert
	names := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	_, crt, key := f.ServerFiles()
	fmt.Fprintf(stdout, "replaced the broker certificate: new key and certificate serial %s, issued %s, valid until %s, for %s\n",
		registry.SerialHex(c.SerialNumber), c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.DateOnly), strings.Join(names, ", "))
	fmt.Fprintf(stdout, "  in %s and %s\n", crt, key)
	fmt.Fprintf(stdout, "The old certificate (serial %s, issued %s) still works for whoever holds its key until a key set retires it. Next, in this order:\n",
		registry.SerialHex(res.Old.SerialNumber), res.Old.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "  1. restart every broker with the new certificate and key: Mosquitto: fleetctl mosquitto-config --dir %s (with the flags you used before), copy both files to each node of a cluster, then restart it; fleetctl broker: restart it\n", dir)
	fmt.Fprintf(stdout, "  2. fleetctl keys rotate --dir %s --retire-brokers   (a key set whose floor is %s)\n", dir, c.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "  3. fleetctl breach --dir %s --incident ID --keyset FILE   (FILE: what step 2 printed; it refuses while the broker it connects to presents the old certificate)\n", dir)
	return nil
}
