package whep

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/camagent/camagent/certs"
)

// grantRefusal maps a Config.CheckGrant error for a POST to device to its status and the text
// for the person holding the grant: what is wrong with it, in words, and what to do, never
// a Go error chain. A grant that does not parse is 401 (RFC 6750 §3.1, invalid_token), like
// one that is not base64url; every other refusal is 403. grant is the one the client sent:
// the text may name its expiry, which the client knows already.
func grantRefusal(err error, device string, grant []byte) (int, string) {
	ask := "ask for a new link (fleetctl grant --device " + device + ")"
	switch {
	case errors.Is(err, certs.ErrMalformed), errors.Is(err, certs.ErrTooLarge):
		return http.StatusUnauthorized, "this is not a grant (malformed): copy the whole link, or the whole grant fleetctl grant printed"
	case errors.Is(err, certs.ErrExpired):
		when := ""
		if exp, err := certs.GrantExpiryUnverified(grant); err == nil {
			when = " at " + exp.UTC().Format(time.RFC3339)
		}
		return http.StatusForbidden, fmt.Sprintf("this grant expired%s (expired): %s", when, ask)
	case errors.Is(err, certs.ErrNotYetValid):
		return http.StatusForbidden, "this grant is not valid yet (not yet valid): the clock of the machine that signed it, or of this relay, is wrong"
	case errors.Is(err, certs.ErrWrongTarget):
		return http.StatusForbidden, "this grant is for another camera, not " + device + " (wrong target): " + ask
	case errors.Is(err, ErrNotViewGrant):
		return http.StatusForbidden, "this grant does not let its holder watch (scope): " + ask
	case errors.Is(err, certs.ErrUnknownKey):
		return http.StatusForbidden, "this grant is signed by a key the fleet does not trust (unknown key): a breach response or a key rotation voided it, or it is made up; " + ask
	case errors.Is(err, certs.ErrBadSignature):
		return http.StatusForbidden, "this grant's signature does not verify (bad signature): it was altered; copy the whole link again, or " + ask
	default:
		return http.StatusForbidden, "this grant does not let its holder watch camera " + device + ": " + ask
	}
}
