package fleet

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// Level grades a Finding.
type Level int

const (
	// OK needs nothing done.
	OK Level = iota
	// Warn needs doing soon, or says this copy of the directory cannot do something.
	Warn
	// Fail is broken now, or breaks the fleet if left.
	Fail
)

func (l Level) String() string {
	switch l {
	case OK:
		return "ok"
	case Warn:
		return "WARN"
	}
	return "FAIL"
}

// Finding is one result of Check.
type Finding struct {
	// What was looked at: "fleet CA", "operator:admin certificate", ...
	What   string
	Level  Level
	Detail string
}

// CAWarnBefore is how long before the fleet CA expires Check warns: no command replaces a CA,
// so its end needs a new fleet planned well ahead.
const CAWarnBefore = 365 * 24 * time.Hour

// Check looks at this copy of the fleet directory as it is, changing nothing (it renews
// nothing, unlike loading a certificate to use it): the CA, which keys are here, the fleet's
// own certificates and whether reg revoked them. reg may be nil when the registry cannot be
// read; the caller says so.
func (f *Fleet) Check(reg *registry.Registry, now time.Time) []Finding {
	var out []Finding
	add := func(what string, l Level, format string, args ...any) {
		out = append(out, Finding{What: what, Level: l, Detail: fmt.Sprintf(format, args...)})
	}

	left := f.CA.Cert.NotAfter.Sub(now)
	switch {
	case left <= 0:
		add("fleet CA", Fail, "expired %s: no certificate of the fleet verifies", day(f.CA.Cert.NotAfter))
	case left < CAWarnBefore:
		add("fleet CA", Warn, "expires %s, in %s: nothing replaces a fleet CA; plan the fleet's move to a new one", day(f.CA.Cert.NotAfter), days(left))
	default:
		add("fleet CA", OK, "valid until %s", day(f.CA.Cert.NotAfter))
	}
	if f.HasCAKey() {
		add("CA key", OK, "here: this copy issues certificates and signs the CRL")
	} else {
		add("CA key", OK, "not here: this copy only checks (fleetctl broker, operator commands)")
	}
	if _, err := os.Stat(filepath.Join(f.Dir, rootKeyFile)); err == nil {
		add("offline root key", Warn, "%s is on this machine: move it off (only fleetctl keys rotate needs it); with it and the operator's certificate, anyone makes every camera trust command and grant keys of their own", filepath.Join(f.Dir, rootKeyFile))
	} else {
		add("offline root key", OK, "not on this machine")
	}
	for _, kind := range []string{"command", "grant"} {
		what := kind + " signing key"
		if _, err := f.signingKey(kind); err != nil {
			add(what, Warn, "none here that key set v%d trusts: commands that sign %ss cannot run from this copy", f.ks.Version, kind)
		} else {
			add(what, OK, "here, trusted by key set v%d", f.ks.Version)
		}
	}

	owns := []ownCert{
		{"operator:" + DefaultOperator, operatorCert, operatorKey, false, false, "any fleetctl command that uses it renews it where the CA key is"},
		{"signer:" + DefaultSigner, signerCert, signerKey, false, true, "a running fleetctl serve renews it where the CA key is"},
		{"broker", serverCert, serverKey, true, false, "a running fleetctl broker, or fleetctl mosquitto-config, renews it where the CA key is"},
	}
	names, _ := f.ViewerNames()
	for _, n := range names {
		owns = append(owns, ownCert{"viewer:" + n, filepath.Join(viewerDir, n+".crt"), filepath.Join(viewerDir, n+".key"), false, true, "a camview --fleet relay renews it where the CA key is; one with its own key needs a new CSR signed (fleetctl viewer --csr)"})
	}
	for _, o := range owns {
		out = append(out, f.checkOwn(reg, now, o))
	}
	out = append(out, f.checkBrokerFloor())
	return out
}

// checkBrokerFloor compares the broker certificate the fleet directory keeps with the broker
// floor (certs.KeySet.BrokerNotBefore) of the key set in force, and of the one keys rotate
// made and breach --keyset has not published yet: a broker presenting a certificate the set
// retires is refused by every client that holds it.
func (f *Fleet) checkBrokerFloor() Finding {
	fd := Finding{What: "broker floor"}
	set := func(l Level, format string, args ...any) Finding {
		fd.Level, fd.Detail = l, fmt.Sprintf(format, args...)
		return fd
	}
	c, err := f.BrokerCertificate()
	if err != nil {
		return set(Fail, "%v", err)
	}
	serial, issued := registry.SerialHex(c.SerialNumber), c.NotBefore.UTC().Format(time.RFC3339)
	if err := f.ks.CheckBroker(c); err != nil {
		return set(Fail, "key set v%d in force retires %s (serial %s, issued %s): every device, relay and fleetctl refuses a broker presenting it; give the broker a new one (fleetctl replace broker) and restart it with it", f.ks.Version, serverCert, serial, issued)
	}
	next := f.ks.Version + 1
	if b, err := os.ReadFile(filepath.Join(f.Dir, keySetsDir, PendingKeySetName(next))); err == nil {
		if ks, err := certs.OpenKeySet(f.root, b); err == nil && ks.CheckBroker(c) != nil {
			return set(Warn, "key set v%d, made by keys rotate and not published yet (%s), retires %s (serial %s, issued %s): breach --keyset refuses to publish it through a broker presenting it; run fleetctl replace broker, restart the broker with the new certificate, remove that file and run keys rotate --retire-brokers again",
				next, filepath.Join(keySetsDir, PendingKeySetName(next)), serverCert, serial, issued)
		}
	}
	if f.ks.BrokerNotBefore == 0 {
		return set(OK, "key set v%d retires no broker certificate", f.ks.Version)
	}
	return set(OK, "key set v%d retires broker certificates issued before %s; %s (serial %s, issued %s) is accepted: every broker must present a certificate issued since the floor",
		f.ks.Version, time.Unix(f.ks.BrokerNotBefore, 0).UTC().Format(time.RFC3339), serverCert, serial, issued)
}

// ownCert is a certificate the fleet directory keeps, for Check.
type ownCert struct {
	identity, certName, keyName string
	// server: a broker's certificate (serverAuth); optional: absent is fine.
	server, optional bool
	// howRenewed says where a renewal happens, for a certificate due or expired.
	howRenewed string
}

// checkOwn checks one certificate the fleet directory keeps.
func (f *Fleet) checkOwn(reg *registry.Registry, now time.Time, o ownCert) Finding {
	fd := Finding{What: o.identity + " certificate"}
	set := func(l Level, format string, args ...any) Finding {
		fd.Level, fd.Detail = l, fmt.Sprintf(format, args...)
		return fd
	}
	b, err := os.ReadFile(filepath.Join(f.Dir, o.certName))
	if errors.Is(err, os.ErrNotExist) {
		if o.optional {
			return set(OK, "none kept here")
		}
		return set(Fail, "%s is missing", o.certName)
	}
	if err != nil {
		return set(Fail, "%v", err)
	}
	c, err := certs.ParseCertPEM(b)
	if err != nil {
		return set(Fail, "%s: %v", o.certName, err)
	}
	usage := x509.ExtKeyUsageClientAuth
	if o.server {
		usage = x509.ExtKeyUsageServerAuth
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: f.Pool, CurrentTime: c.NotBefore.Add(time.Second), KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
		return set(Fail, "%s was not issued by this fleet's CA: %v", o.certName, err)
	}
	serial := registry.SerialHex(c.SerialNumber)
	if reg != nil && reg.Revoked(c.SerialNumber) {
		return set(Fail, "serial %s is revoked (fleetctl replace, or viewer --revoke, elsewhere?): this copy no longer gets in; copy the new pair here", serial)
	}
	prefix := ""
	if _, err := os.Stat(filepath.Join(f.Dir, o.keyName)); errors.Is(err, os.ErrNotExist) {
		if !strings.HasPrefix(o.identity, "viewer:") {
			return set(Fail, "%s is missing", o.keyName)
		}
		prefix = "key kept by the relay itself; "
	} else if k, err := certs.LoadKeyFile(filepath.Join(f.Dir, o.keyName)); err != nil {
		return set(Fail, "%v", err)
	} else if !certs.SamePublicKey(c, k) {
		return set(Fail, "%s is not the key of %s: a renewal stopped half-way; the next fleetctl command with the CA key here renews it", o.keyName, o.certName)
	}
	left := c.NotAfter.Sub(now)
	switch {
	case left <= 0:
		return set(Fail, "%sserial %s expired %s: %s", prefix, serial, day(c.NotAfter), o.howRenewed)
	case left < RenewBefore:
		return set(Warn, "%sserial %s expires %s, in %s, and was not renewed: %s", prefix, serial, day(c.NotAfter), days(left), o.howRenewed)
	}
	return set(OK, "%sserial %s, valid until %s", prefix, serial, day(c.NotAfter))
}

// day formats t as a date.
func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// days formats d in whole days (hours under a day).
func days(d time.Duration) string {
	if d < 24*time.Hour {
		return d.Round(time.Hour).String()
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

// Worst returns the worst level among fs.
func Worst(fs []Finding) Level {
	w := OK
	for _, f := range fs {
		w = max(w, f.Level)
	}
	return w
}
