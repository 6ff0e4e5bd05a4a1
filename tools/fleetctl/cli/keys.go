package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
)

func keysCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	_, args, err := subcommand("keys", args, "rotate")
	if err != nil {
		return err
	}
	fs, dir := newFlags("keys rotate", stderr)
	root := fs.String("root", "", "the offline root key (default <dir>/offline/root.key)")
	var drop []string
	fs.Func("drop", "id of a command or grant key to leave out of the new key set (repeat for several)", func(s string) error {
		drop = append(drop, s)
		return nil
	})
	retire := fs.Bool("retire-brokers", false, "retire every broker certificate issued before the fleet directory's broker/server.crt: the new set's floor is its NotBefore (after fleetctl replace broker, once every broker presents the new certificate)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	if *root == "" {
		*root = f.RootKeyPath()
	}
	rk, err := f.LoadRootKey(*root)
	if err != nil {
		return err
	}
	was := f.KeySet()
	path, ks, err := f.RotateKeysWith(rk, fleet.RotateOptions{Drop: drop, RetireBrokers: *retire}, time.Now())
	if err != nil {
		return err
	}
	ids := func(keys []certs.PublicKey) string {
		var s []string
		for _, k := range keys {
			s = append(s, k.ID)
		}
		return strings.Join(s, " ")
	}
	fmt.Fprintf(stderr, "key set v%d signed by the root %s\n  command keys: %s\n  grant keys:   %s\n  brokers:      %s\nIt is not in force yet: publish it with fleetctl breach --incident ID --keyset %s\n",
		ks.Version, rk.ID(), ids(ks.CommandKeys), ids(ks.GrantKeys), brokerFloorSummary(f, was, ks), path)
	if *retire {
		fmt.Fprintln(stderr, "breach --keyset refuses to publish it until the broker it connects to presents the new certificate: restart every broker (every node of a cluster) with it first.")
	}
	// Only the path on stdout, for scripts: ks=$(fleetctl keys rotate).
	fmt.Fprintln(stdout, path)
	return nil
}

func crlCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("crl", stderr)
	out := fs.String("out", "", "where to write the PEM CRL (default <dir>/crl.pem, Mosquitto's crlfile)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = f.CRLPath()
	}
	reg, err := f.OpenRegistry(logger(stderr))
	if err != nil {
		return err
	}
	defer reg.Close()
	// The fleet's CRL is the one kept on the new one (signer.MergedCRL), wherever that goes.
	var w signer.CRLWritten
	err = reg.Update(func(tx *registry.Tx) error {
		var b []byte
		var err error
		if b, w, err = signer.MergedCRL(f.CRLPath(), f.CA, tx, time.Now()); err != nil {
			return err
		}
		return atomicfile.WriteFile(*out, b, 0o644)
	})
	if err != nil {
		return fmt.Errorf("crl: %w", err)
	}
	w.Log(logger(stderr), f.CRLPath())
	fmt.Fprintf(stdout, "wrote %s (%d revoked serials listed; certificates expired for over a day are left out)\nMosquitto reads its crlfile only when it starts: restart it to apply.\n", *out, w.Listed)
	return nil
}

func rolloutCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("rollout", args, "resume", "status")
	if err != nil {
		return err
	}
	fs, dir := newFlags("rollout "+sub, stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	if sub == "status" {
		st, err := signer.LoadRollout(f.RolloutPath())
		if err != nil {
			return err
		}
		if st.Aborted {
			fmt.Fprintf(stdout, "aborted at %s: %s\n", st.AbortedAt.Format(time.RFC3339), st.Reason)
		} else {
			fmt.Fprintln(stdout, "running")
		}
		return nil
	}
	reg, err := f.OpenRegistry(logger(stderr))
	if err != nil {
		return err
	}
	defer reg.Close()
	before, _, err := signer.Resume(reg, f.RolloutPath(), time.Now())
	if err != nil {
		return err
	}
	if before.Aborted {
		fmt.Fprintf(stdout, "rollout resumed; it was aborted at %s: %s\n", before.AbortedAt.Format(time.RFC3339), before.Reason)
	} else {
		fmt.Fprintln(stdout, "rollout was not aborted; the abort threshold counts from now")
	}
	return nil
}

// brokerFloorSummary says which broker certificates ks retires, next to was, the set in force,
// and whether the fleet directory's broker certificate is among them.
func brokerFloorSummary(f *fleet.Fleet, was, ks *certs.KeySet) string {
	if ks.BrokerNotBefore == 0 {
		return "retires none"
	}
	floor := time.Unix(ks.BrokerNotBefore, 0).UTC().Format(time.RFC3339)
	s := "retires every broker certificate issued before " + floor
	if ks.BrokerNotBefore == was.BrokerNotBefore {
		s += fmt.Sprintf(" (the floor of v%d, carried forward)", was.Version)
	} else if was.BrokerNotBefore != 0 {
		s += fmt.Sprintf(" (v%d retired those issued before %s)", was.Version, time.Unix(was.BrokerNotBefore, 0).UTC().Format(time.RFC3339))
	}
	c, err := f.BrokerCertificate()
	switch {
	case err != nil:
		s += fmt.Sprintf("; cannot read the broker certificate here: %v", err)
	case ks.CheckBroker(c) != nil:
		s += fmt.Sprintf("; it retires the fleet directory's own broker certificate (serial %s, issued %s) too: run fleetctl replace broker", registry.SerialHex(c.SerialNumber), c.NotBefore.UTC().Format(time.RFC3339))
	default:
		s += fmt.Sprintf("; the fleet directory's broker certificate (serial %s, issued %s) stays accepted", registry.SerialHex(c.SerialNumber), c.NotBefore.UTC().Format(time.RFC3339))
	}
	return s
}
