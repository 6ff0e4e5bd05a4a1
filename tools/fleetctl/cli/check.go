package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
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
		fd := fleet.Finding{What: "registry", Level: fleet.OK, Detail: fmt.Sprintf("%d devices enrolled, %d of them retired; %d revocations", devices, retired, len(reg.Revocations()))}
		if damage, n := reg.Damaged(); n > 0 {
			fd.Level, fd.Detail = fleet.Warn, fd.Detail+"; "+damageDetail(reg.Path(), damage, n)
		}
		findings = append(findings, fd)
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
	rl, err := signer.ReadCRL(f.CRLPath(), f.CA.Cert)
	if errors.Is(err, os.ErrNotExist) {
		return set(fleet.OK, "none yet: fleetctl serve writes it when it starts, fleetctl crl or mosquitto-config on demand (Mosquitto needs it; fleetctl broker reads it as the second copy of the revocations)")
	}
	if err != nil {
		return set(fleet.Fail, "%v: Mosquitto will not start with it, and fleetctl broker keeps refusing only what it listed before; run fleetctl crl", err)
	}
	if !now.Before(rl.NextUpdate) {
		return set(fleet.Fail, "past its nextUpdate (%s): Mosquitto refuses every client with it; run fleetctl crl and restart Mosquitto", rl.NextUpdate.UTC().Format(time.RFC3339))
	}
	listed := make(map[string]bool, len(rl.RevokedCertificateEntries))
	for _, e := range rl.RevokedCertificateEntries {
		listed[registry.SerialHex(e.SerialNumber)] = true
	}
	missing := 0
	revs := reg.Revocations()
	for _, r := range signer.CRLEntries(revs, now) {
		if !listed[registry.SerialHex(r.Serial)] {
			missing++
		}
	}
	// The other way round: a serial the CRL lists and the log does not revoke is a revocation
	// the log lost (a revocation is never undone). Every CRL written keeps it, and fleetctl
	// broker refuses it.
	inLog := make(map[string]bool, len(revs))
	for _, r := range revs {
		inLog[registry.SerialHex(r.Serial)] = true
	}
	lost := 0
	for serial := range listed {
		if !inLog[serial] {
			lost++
		}
	}
	var warn []string
	if missing > 0 {
		warn = append(warn, fmt.Sprintf("lacks %d of the registry's revocations: run fleetctl crl, then restart Mosquitto (it reads the CRL only when it starts)", missing))
	}
	if lost > 0 {
		warn = append(warn, fmt.Sprintf("lists %d serial%s the registry's log lacks: revocations the log lost to damage (see the registry line). They stay revoked: every CRL written keeps them and fleetctl broker refuses them", lost, plural(lost)))
	}
	if len(warn) > 0 {
		return set(fleet.Warn, "%s", strings.Join(warn, "; it also "))
	}
	return set(fleet.OK, "lists every revocation (%d), written %s; Mosquitto applies it once restarted after that", len(rl.RevokedCertificateEntries), rl.ThisUpdate.Add(certs.Backdate).UTC().Format(time.RFC3339))
}

// damageDetail describes the damaged lines of the registry's log at path for fleetctl check.
func damageDetail(path string, damage []registry.Damage, n int) string {
	offsets := make([]string, 0, min(len(damage), 5))
	salvaged := 0
	for i, d := range damage {
		if i < 5 {
			offsets = append(offsets, strconv.FormatInt(d.Offset, 10))
		}
		salvaged += len(d.Revoked)
	}
	more := ""
	if n > len(offsets) {
		more = ", …"
	}
	return fmt.Sprintf("%d damaged line%s in %s (at byte %s%s), skipped; the %d serial%s they still name as revoked stay revoked, and so does every serial crl.pem lists. The storage changed the file: check the disk (dmesg), and restore lost records from a backup",
		n, plural(n), path, strings.Join(offsets, ", "), more, salvaged, plural(salvaged))
}

// plural is "s" unless n is 1.
func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
