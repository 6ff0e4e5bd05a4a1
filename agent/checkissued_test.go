package agent

import (
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
)

func TestCheckIssuedRefusesCertificatesTheDeviceMustNotUse(t *testing.T) {
	now := time.Now()
	f := enrolled(t, "cam-0001", now, closedPort(t))
	a, err := New(Config{StateDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := certs.GenerateKey()
	otherKey, _ := certs.GenerateKey()
	next := &credential{gen: 1, key: key}
	foreign, _ := certs.NewCA("foreign", now.Add(-time.Hour), 0)
	issue := func(ca *certs.CA, name string, pub any, at time.Time, validity time.Duration) *credential {
		c, err := ca.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: name, PublicKey: pub, Now: at, Validity: validity})
		if err != nil {
			t.Fatal(err)
		}
		return &credential{cert: c}
	}
	ahead := now.Add(certs.Backdate + time.Minute) // valid from a minute ahead: within the skew
	for _, tc := range []struct {
		name string
		c    *credential
		ok   bool
	}{
		{"a certificate from the fleet CA for this device and key is accepted", issue(f.ca, "cam-0001", key.Public(), now, 0), true},
		{"one valid from a minute ahead is accepted", issue(f.ca, "cam-0001", key.Public(), ahead, 0), true},
		{"one from another CA is refused", issue(foreign, "cam-0001", key.Public(), now, 0), false},
		{"one from another CA valid from a minute ahead is refused", issue(foreign, "cam-0001", key.Public(), ahead, 0), false},
		{"one for another device is refused", issue(f.ca, "cam-0002", key.Public(), now, 0), false},
		{"one for another key is refused", issue(f.ca, "cam-0001", otherKey.Public(), now, 0), false},
		{"one valid from an hour ahead is refused", issue(f.ca, "cam-0001", key.Public(), now.Add(time.Hour+certs.Backdate), 0), false},
		{"an expired one is refused", issue(f.ca, "cam-0001", key.Public(), now.Add(-48*time.Hour), time.Hour), false},
		{"one valid for two years is refused", issue(f.ca, "cam-0001", key.Public(), now, 2*365*24*time.Hour), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := a.checkIssued(tc.c.cert, next)
			if (err == nil) != tc.ok {
				t.Fatalf("checkIssued = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
