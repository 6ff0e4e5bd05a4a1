package whep_test

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/whep"
)

// fleetKeys checks grants with the grant keys of cam's fleet, as camview serve --fleet does.
func fleetKeys(t *testing.T, cam *camviewtest.Camera) *whep.GrantKeys {
	t.Helper()
	k, err := whep.NewGrantKeys(func() (*certs.Verifier, error) { return cam.Fleet.KeySet().GrantVerifier(), nil }, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// forgedGrant is a well-formed view grant for device signed by a key of no fleet: anyone can
// make one.
func forgedGrant(t *testing.T, device string) []byte {
	t.Helper()
	k, err := certs.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	b, err := certs.SignGrant(k, certs.Grant{Device: device, Scope: certs.ScopeView, Subject: "mallory",
		IssuedAt: now.Add(-time.Minute).Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Offers to a camera that does not answer hold a place among MaxSessions for AnswerTimeout.
// With CheckGrant, made-up grants get 403 at once and hold none: they cannot keep the
// viewers with real grants out.
func TestMadeUpGrantsHoldNoPlace(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	s := startServer(t, cam, whep.Config{MaxSessions: 1, AnswerTimeout: time.Minute, CheckGrant: fleetKeys(t, cam).Check})
	sdp := camviewtest.NewViewer(t).SDP

	var wg sync.WaitGroup
	statuses := make(chan int, 8)
	for range 8 {
		wg.Go(func() {
			// cam-0404 is offline: an offer that reached it would wait for AnswerTimeout.
			resp := s.post(t, "cam-0404", "Bearer "+token(forgedGrant(t, "cam-0404")), "application/sdp", sdp)
			statuses <- resp.StatusCode
		})
	}
	wg.Wait()
	close(statuses)
	for st := range statuses {
		if st != http.StatusForbidden {
			t.Fatalf("POST with a made-up grant: %d, want 403", st)
		}
	}
	if !strings.Contains(s.log.String(), "grant refused by the relay") {
		t.Errorf("the refusals are not logged as the relay's")
	}

	v := camviewtest.NewViewer(t)
	resp := s.post(t, cam.ID, "Bearer "+token(cam.Grant(t, nil)), "application/sdp", v.SDP)
	if answer := body(resp); resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST with the camera's grant after the made-up ones: %s: %s", resp.Status, answer)
	}
}

// The relay refuses, before sending anything, a grant its fleet's keys did not sign, one for
// another camera, one for another scope, an expired one and bytes that are no grant, each
// saying in words what is wrong and what to do: the page shows the text to a viewer, who can
// make nothing of a Go error chain.
func TestTheRelayRefusesGrantsItsFleetWouldNot(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	s := startServer(t, cam, whep.Config{CheckGrant: fleetKeys(t, cam).Check})
	expired := cam.ExpiredGrant(t)
	expiry, err := certs.GrantExpiryUnverified(expired)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		grant  []byte
		status int
		text   []string
	}{
		{"signed by no key of the fleet", forgedGrant(t, cam.ID), 403, []string{"unknown key", "breach", "fleetctl grant --device " + cam.ID}},
		{"for another camera", cam.Grant(t, func(g *certs.Grant) { g.Device = "cam-0002" }), 403, []string{"another camera", "wrong target", "fleetctl grant --device " + cam.ID}},
		{"for the owner scope", cam.Grant(t, func(g *certs.Grant) { g.Scope = certs.ScopeOwner }), 403, []string{"scope", "watch"}},
		{"expired", expired, 403, []string{"expired at " + expiry.UTC().Format(time.RFC3339), "new link"}},
		{"bytes that are no grant", []byte("abc"), 401, []string{"not a grant", "copy the whole link"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp := s.post(t, cam.ID, "Bearer "+token(c.grant), "application/sdp", camviewtest.NewViewer(t).SDP)
			text := body(resp)
			if resp.StatusCode != c.status {
				t.Fatalf("POST: %s (%s), want %d", resp.Status, strings.TrimSpace(text), c.status)
			}
			for _, want := range c.text {
				if !strings.Contains(text, want) {
					t.Errorf("the refusal %q does not say %q", strings.TrimSpace(text), want)
				}
			}
			for _, chain := range []string{"certs:", "whep:", "envelope:"} {
				if strings.Contains(text, chain) {
					t.Errorf("the refusal %q shows a viewer a Go error chain (%q)", strings.TrimSpace(text), chain)
				}
			}
			if c.status == http.StatusUnauthorized && !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
				t.Errorf("WWW-Authenticate %q, want an invalid_token challenge", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	if !strings.Contains(s.log.String(), "grant refused by the relay: certs: wrong target") {
		t.Errorf("the log does not keep certs' reason:\n%s", s.log.String())
	}
	if strings.Contains(cam.Log.Text(), "viewer refused") {
		t.Errorf("an offer the relay refused reached the camera:\n%s", cam.Log.Text())
	}
}

// One grant may have MaxPendingPerGrant offers waiting; the next gets 429 until one ends.
func TestOneGrantHoldsAtMostMaxPendingPerGrantOffers(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	s := startServer(t, cam, whep.Config{AnswerTimeout: 2 * time.Second, CheckGrant: fleetKeys(t, cam).Check})
	grant := cam.Grant(t, func(g *certs.Grant) { g.Device = "cam-0404" }) // a real grant, for a camera that is offline
	sdp := camviewtest.NewViewer(t).SDP
	var wg sync.WaitGroup
	for range whep.MaxPendingPerGrant {
		wg.Go(func() {
			if resp := s.post(t, "cam-0404", "Bearer "+token(grant), "application/sdp", sdp); resp.StatusCode != http.StatusGatewayTimeout {
				t.Errorf("a waiting offer ended with %s, want 504", resp.Status)
			}
		})
	}
	deadline := time.Now().Add(camviewtest.Timeout)
	for s.h.Pending() < whep.MaxPendingPerGrant {
		if time.Now().After(deadline) {
			t.Fatalf("%d offers pending", s.h.Pending())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The same grant spelled otherwise (its envelope is JSON: a space changes the bytes, not
	// the signed grant) is the same grant.
	for _, g := range [][]byte{grant, append([]byte(" "), grant...), append(append([]byte(nil), grant...), '\n')} {
		if err := fleetKeys(t, cam).Check("cam-0404", g); err != nil {
			t.Fatalf("the respelled grant does not check: %v", err)
		}
		resp := s.post(t, "cam-0404", "Bearer "+token(g), "application/sdp", sdp)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("one offer over the grant's cap: %s (Retry-After %q), want 429 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
		}
	}
	// Another grant is not held up by this one.
	other := camviewtest.NewViewer(t)
	if resp := s.post(t, cam.ID, "Bearer "+token(cam.Grant(t, nil)), "application/sdp", other.SDP); resp.StatusCode != http.StatusCreated {
		t.Fatalf("another grant's offer: %s", resp.Status)
	}
	wg.Wait()
	if s.h.Pending() != 0 {
		t.Fatalf("%d offers still pending after they timed out", s.h.Pending())
	}
	v := camviewtest.NewViewer(t)
	if resp := s.post(t, cam.ID, "Bearer "+token(cam.Grant(t, nil)), "application/sdp", v.SDP); resp.StatusCode != http.StatusCreated {
		t.Fatalf("an offer after the others ended: %s", resp.Status)
	}
}

// GrantKeys loads the keys again for a grant of a key it does not trust (at most every 5 s),
// and at most a minute after it last did for any grant, so a key set rotation reaches it
// without a restart either way.
func TestGrantKeysFollowAKeySetRotation(t *testing.T) {
	k1, _ := certs.NewSigningKey()
	k2, _ := certs.NewSigningKey()
	sign := func(k *certs.SigningKey) []byte {
		now := time.Now()
		b, err := certs.SignGrant(k, certs.Grant{Device: "cam-0001", Scope: certs.ScopeView, Subject: "s",
			IssuedAt: now.Add(-time.Minute).Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var mu sync.Mutex
	current, loads := certs.NewVerifier(k1.Public()), 0
	fake := clocktest.New(time.Now())
	keys, err := whep.NewGrantKeys(func() (*certs.Verifier, error) {
		mu.Lock()
		defer mu.Unlock()
		loads++
		return current, nil
	}, fake, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := keys.Check("cam-0001", sign(k1)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	current = certs.NewVerifier(k2.Public()) // fleetctl keys rotate: k1 dropped, k2 in
	mu.Unlock()
	if err := keys.Check("cam-0001", sign(k2)); !errors.Is(err, certs.ErrUnknownKey) || loads != 1 {
		t.Fatalf("a new key's grant right after the start: %v after %d loads, want ErrUnknownKey and no load", err, loads)
	}
	fake.Advance(5 * time.Second)
	if err := keys.Check("cam-0001", sign(k2)); err != nil || loads != 2 {
		t.Fatalf("a new key's grant 5 s on: %v after %d loads, want it taken after a load", err, loads)
	}
	fake.Advance(time.Minute)
	if err := keys.Check("cam-0001", sign(k1)); !errors.Is(err, certs.ErrUnknownKey) {
		t.Fatalf("a dropped key's grant a minute on: %v, want ErrUnknownKey", err)
	}
	// Made-up keys do not make it load more than every 5 s.
	before := loads
	for range 100 {
		k, _ := certs.NewSigningKey()
		_ = keys.Check("cam-0001", sign(k))
	}
	if loads-before > 1 {
		t.Fatalf("100 grants of unknown keys made %d loads", loads-before)
	}
}
