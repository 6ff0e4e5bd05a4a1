package cli

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
)

// ErrCheckFailed is returned by check when a finding is FAIL.
var ErrCheckFailed = errors.New("check: the fleet directory has failures")

// checkCmd looks at the fleet directory and says what needs doing: the upkeep list of the
// README, checked. It changes nothing and needs no broker.
func checkCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("check", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	defer f.Close()
	now := time.Now()
	var findings []fleet.Finding
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		findings = append(findings, fleet.Finding{What: "registry", Level: fleet.Fail, Detail: err.Error()})
		reg = nil
	} else {
		defer reg.Close()
		devices, retired := len(reg.Devices()), len(reg.RetiredDevices())
		findings = append(findings, fleet.Finding{What: "registry", Level: fleet.OK, Detail: fmt.Sprintf("%d devices enrolled, %d of them retired; %d revocations", devices, retired, len(reg.Revocations()))})
	}
	findings = append(findings, f.Check(reg, now)...)
	if reg != nil {
		findings = append(findings, checkCRL(f, reg, now))
	}
	if st, err := signer.LoadRollout(f.RolloutPath()); err != nil {
		findings = append(findings, fleet.Finding{What: "rollout", Level: fleet.Fail, Detail: err.Error()})
	} else if st.Aborted {
		findings = append(findings, fleet.Finding{What: "rollout", Level: fleet.Warn, Detail: fmt.Sprintf("aborted %s (%s): no camera rotates until fleetctl rollout resume", st.AbortedAt.UTC().Format(time.RFC3339), st.Reason)})
	} else {
		findings = append(findings, fleet.Finding{What: "rollout", Level: fleet.OK, Detail: "not aborted"})
	}

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, fd := range findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", fd.What, fd.Level, fd.Detail)
	}
	tw.Flush()
	if fleet.Worst(findings) == fleet.Fail {
		return ErrCheckFailed
	}
	return nil
}

// checkCRL compares crl.pem, the file Mosquitto loads at start, with the registry: a
// revocation missing from it is a certificate Mosquitto still admits after a restart.
func checkCRL(f *fleet.Fleet, reg *registry.Registry, now time.Time) fleet.Finding {
	fd := fleet.Finding{What: "CRL (crl.pem)"}
	set := func(l fleet.Level, format string, args ...any) fleet.Finding {
		fd.Level, fd.Detail = l, fmt.Sprintf(format, args...)
		return fd
	}
	b, err := os.ReadFile(f.CRLPath())
	if errors.Is(err, os.ErrNotExist) {
		return set(fleet.OK, "none: only Mosquitto needs one (fleetctl mosquitto-config writes it)")
	}
	if err != nil {
		return set(fleet.Fail, "%v", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "X509 CRL" {
		return set(fleet.Fail, "no PEM X509 CRL block: Mosquitto will not start with it; run fleetctl crl")
	}
	rl, err := x509.ParseRevocationList(block.Bytes)
	if err != nil {
		return set(fleet.Fail, "%v: Mosquitto will not start with it; run fleetctl crl", err)
	}
	if err := rl.CheckSignatureFrom(f.CA.Cert); err != nil {
		return set(fleet.Fail, "not signed by this fleet's CA (%v): run fleetctl crl", err)
	}
	if !now.Before(rl.NextUpdate) {
		return set(fleet.Fail, "past its nextUpdate (%s): Mosquitto refuses every client with it; run fleetctl crl and restart Mosquitto", rl.NextUpdate.UTC().Format(time.RFC3339))
	}
	listed := make(map[string]bool, len(rl.RevokedCertificateEntries))
	for _, e := range rl.RevokedCertificateEntries {
		listed[registry.SerialHex(e.SerialNumber)] = true
	}
	missing := 0
	for _, r := range signer.CRLEntries(reg.Revocations(), now) {
		if !listed[registry.SerialHex(r.Serial)] {
			missing++
		}
	}
	if missing > 0 {
		return set(fleet.Warn, "lacks %d of the registry's revocations: run fleetctl crl, then restart Mosquitto (it reads the CRL only when it starts)", missing)
	}
	return set(fleet.OK, "lists every revocation (%d), written %s; Mosquitto applies it once restarted after that", len(rl.RevokedCertificateEntries), rl.ThisUpdate.Add(certs.Backdate).UTC().Format(time.RFC3339))
}
