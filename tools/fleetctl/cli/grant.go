package cli

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/url"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
)

// DefaultGrantTTL is how long a grant from fleetctl grant lasts when --ttl is not given.
const DefaultGrantTTL = time.Hour

// grantCmd signs a view grant for one device at the epoch it will hold: the higher of the
// epoch it reports and the one it is told to reach, so the grant works now and keeps working
// through a rotation already asked for, and no grant outlives the next breach.
func grantCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("grant", stderr)
	device := fs.String("device", "", "device id the grant is for (required)")
	ttl := fs.Duration("ttl", DefaultGrantTTL, fmt.Sprintf("how long the grant lasts, at most %v", certs.MaxGrantLifetime))
	subject := fs.String("subject", "viewer", "opaque id of the viewer the grant is for (letters, digits, '.', '_', ':', '-'; never an email or a name)")
	viewURL := fs.String("url", "", "a camview page URL (like http://127.0.0.1:8889/): print that page's URL for this device and grant instead of the bare grant")
	of := addOperatorFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := certs.ValidDeviceID(*device); err != nil {
		return fmt.Errorf("grant: --device: %w", err)
	}
	if *ttl <= 0 || *ttl > certs.MaxGrantLifetime {
		return fmt.Errorf("grant: --ttl %v out of range (0, %v]", *ttl, certs.MaxGrantLifetime)
	}
	var base *url.URL
	if *viewURL != "" {
		u, err := url.Parse(*viewURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("grant: --url %q is not an http(s) URL", *viewURL)
		}
		base = u
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	st, err := readFleetState(ctx, f, of, stderr)
	if err != nil {
		return err
	}
	defer st.op.Close()
	col := st.col
	if st.staleKeys != nil {
		return fmt.Errorf("grant: %w", st.staleKeys)
	}
	if err := refuseRetired(col, "grant", *device); err != nil {
		return err
	}
	cur, known := col.DeviceEpoch(*device)
	if !known {
		return fmt.Errorf("grant: %s has published no state: its epoch is unknown (is it enrolled and has it connected once?)", *device)
	}
	now := time.Now()
	g := certs.Grant{
		Device: *device, Epoch: max(cur, col.DesiredEpoch(*device)), Scope: certs.ScopeView, Subject: *subject,
		IssuedAt: now.Unix(), ExpiresAt: now.Add(*ttl).Unix(),
	}
	b, err := f.SignGrant(g)
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	enc := base64.RawURLEncoding.EncodeToString(b)
	fmt.Fprintf(stderr, "grant: view %s at epoch %d until %s\n", g.Device, g.Epoch, g.Expiry().UTC().Format(time.RFC3339))
	if base == nil {
		fmt.Fprintln(stdout, enc)
		return nil
	}
	// The grant goes in the fragment: browsers never send it to the server, so it stays out
	// of access logs; the page hands it to camview's WHEP endpoint as a bearer token.
	base.Fragment = ""
	fmt.Fprintf(stdout, "%s#device=%s&grant=%s\n", base.String(), url.QueryEscape(g.Device), enc)
	return nil
}
