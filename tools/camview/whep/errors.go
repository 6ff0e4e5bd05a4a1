package whep

import "errors"

// Sentinel errors. Callers match them with errors.Is.
var (
	// ErrNoGrant is ParseBearer's error for a request without an Authorization header.
	ErrNoGrant = errors.New("whep: no grant: want Authorization: Bearer <grant>")
	// ErrBadGrant is ParseBearer's and DecodeGrant's error for an Authorization header or a
	// token that is not a bearer grant in base64url.
	ErrBadGrant = errors.New("whep: malformed grant")
	// ErrNotViewGrant is GrantKeys.Check's error for a grant whose scope is not
	// certs.ScopeView (an owner's grant, say): it does not let its holder watch.
	ErrNotViewGrant = errors.New("whep: not a view grant")
)
