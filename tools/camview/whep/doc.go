// Package whep serves WHEP, the WebRTC-HTTP Egress Protocol (draft-ietf-wish-whep), in front
// of camview's signaling relay, so that a browser (or any WHEP player) can watch a camera:
//
//	POST   /whep/{device}            an SDP offer (application/sdp), Authorization: Bearer <grant>
//	                                 → 201 Created, the camera's SDP answer, Location: /whep/{device}/{resource}
//	DELETE /whep/{device}/{resource} → 200 OK; the camera gets a Bye
//	GET    /whep/{device}/{resource} → 200 "live"; 410 Gone and why, for EndedMemory after the
//	                                 camera ended it; 404 unknown
//
// The resource id is random and known only to the client it was given to: DELETE and GET take
// no grant, so it is not the signaling session id, which is logged and crosses the broker.
//
// The grant is the signed view grant in base64url without padding, as `fleetctl grant`
// prints it; the handler passes it to the camera, which decides (S9). With Config.CheckGrant
// (GrantKeys: the fleet's grant keys) the handler first refuses, with 403, a grant the camera
// would refuse for its signature, device, scope or validity, before it takes a place among
// MaxSessions: made-up grants offered to cameras that never answer cannot fill them. One grant
// has at most MaxPendingPerGrant offers waiting (429 beyond). There is no trickle ICE over
// WHEP (PATCH is answered 405): the client sends its offer once ICE gathering has completed,
// and the camera's answer carries its candidates. Every error's text says, in words for the
// person holding the grant, what is wrong and what to do. Errors: a missing or malformed grant 401
// with WWW-Authenticate: Bearer; a grant the relay refused 403; the camera's refusal 403
// (grant, privacy), 503 with Retry-After (viewer limit, busy) or 400 (bad offer); wrong
// content type 415; an offer over MaxOfferSize 413; too many offers of one grant waiting 429
// with Retry-After; no answer within the answer timeout 504.
//
// A session ends when the client DELETEs it, when the camera says Bye, or at the latest when
// its grant expires (plus certs.ClockSkew and SessionGrace), as the camera ends it then: a Bye
// lost while the relay reconnected, or never sent by a camera that lost power, does not keep a
// place among MaxSessions for good.
//
// The handler sends no CORS headers: the page that uses it is served from the same origin,
// and other origins cannot send it an Authorization header or an application/sdp body.
//
// What it must never do: log, or echo in a response, a grant's bytes, an SDP or a candidate
// (they carry secrets and network addresses, P2b); it logs the session id, the device, the
// status and the refusal reason. A refusal of the grant names what failed (its device, scope,
// key id or validity), which the client itself sent.
package whep
