// Package egress keeps the device's sensitive values out of everything it sends and logs
// (P2 and P4 in SECURITY-BAR.md).
//
// A Guard holds the values — SSID, BSSID, Wi-Fi passphrase, nickname, and whatever else the
// agent registers later (owner email, local IP addresses) — and Check refuses a payload that
// carries one of them. Wrap puts a Guard on the publish path, failing closed: a refused message
// is not sent, and Refusals counts it. NewRedactingHandler puts the same Guard in front of a
// slog.Handler, replacing each value found in a log record with "[redacted]".
//
// # Threat model
//
// The guard is the second line of defence. The first is that every outbound message is a typed
// schema with no personal field (P1, agent/wire). The guard catches the mistakes typing does
// not: a value copied into an error string that ends up in a reply, a free-form field added
// carelessly, a value base64-encoded inside a blob. It does not defend against code written to
// exfiltrate — anyone who can change the agent can encrypt a value first — and it is not a
// substitute for never putting the values in a message.
//
// # Encodings, and why this way
//
// Check searches each payload for each value as it is and in every common encoding. Payload
// and needles are first brought to one normal form (normalize): letters case-folded (ASCII fast
// path, Unicode simple folding beyond it) and the base64url characters '-' and '_' mapped to
// '+' and '/'. Then:
//
//   - Raw and case-folded: the normalized value is searched for, so "HomeNet", "homenet" and
//     "HOMENET" are all found; whether the match was exact is only worked out for the error.
//   - Hex: the hex of the value (and of its lower- and upper-case forms, as for base64) is
//     searched for; folding makes lower, upper and mixed-case hex alike.
//   - Base64: base64 of a substring depends on where the value starts relative to the 3-byte
//     groups of the encoded data. Rather than decoding every base64-looking run of the payload
//     at four offsets (costly, and the decoded garbage of wrong offsets makes short values
//     match by chance), the guard precomputes, for each of the three alignments, the base64
//     characters that encode the value's bits and nothing else (stableBase64). Every base64
//     encoding of data containing the value contains one of the three, whatever surrounds it
//     and whether padded or not. Normalizing maps the URL alphabet onto the standard one, so
//     one set of needles serves both. Folding base64 loses one bit per character, which a
//     needle of at least 10 characters can spare: 50 bits still do not match by chance.
//   - Percent-encoding and JSON escapes: these can write any character in several ways
//     (%2D or %2d, \u0041 or A, "\/" or "/"), so instead of enumerating spellings the guard
//     undoes them: when the payload has a '%', it is percent-decoded (with '+' as space) and
//     searched again with every needle; when it has a '\', it is JSON-unescaped (surrogate
//     pairs included) and searched again. Each decoded form is decoded again in the same way,
//     up to three layers deep, so a JSON document carried as a string inside another, or a
//     path-escaped URL marshalled into JSON (\u0026 beside %2F), is seen through. Base64 or
//     hex inside percent-encoded or JSON-escaped text is therefore found too. A value with a
//     space also gets a needle with '+' for the space, so form encoding without any '%' needs
//     no decoding pass.
//
// Not covered: UTF-16 or other multi-byte encodings of text, base64 broken across lines,
// more than three nested layers of escaping, compression and encryption. A typed schema has
// no field where those would appear.
//
// # Short values
//
// A short value found inside other text is usually chance, not a leak: a two-letter SSID
// occurs in every certificate. So, by the length of the value in bytes:
//
//   - MinSubstring (8) or more: matched anywhere, in every encoding. Each base64 needle is then
//     at least 10 characters (50 bits once folded) and each hex needle 16 (64 bits), too long
//     to occur by chance.
//   - MinEncoded (4) to 7: matched only as a whole word (no letter or digit on either side) raw,
//     case-folded and in hex, and as a whole base64 token — so such a value base64-encoded
//     inside a longer blob is not found.
//   - 1 to 3: matched only as a whole JSON string ({"n":"ab"}, also JSON-escaped or
//     percent-encoded) or as the whole of the text checked (a log attribute equal to the
//     value), raw or case-folded. Such a value inside a sentence is not found: "ab" or "Cam"
//     is part of too many words and identifiers (a device named cam-0001) to refuse them all.
//
// The guard fails closed, so a value of 4–7 bytes that is also a word of the protocol (an SSID
// "host", a nickname "video") or a number it sends (an SSID "1234") makes the guard refuse
// the messages that carry that word. That is the price of refusing rather than guessing; Refusals
// makes it visible, and onboarding can warn about such values.
//
// # Cost
//
// Set compiles the values once into needles (typically 5–14 per value) and files them in a
// table by a hash of their first four bytes. Check normalizes the payload once into a pooled
// buffer and makes one pass over it, hashing the four bytes at each position and comparing
// only the needles filed under that hash, so its cost grows with the payload, not with the
// number of needles; the JSON and percent passes are made only when the payload has a '\'
// or a '%'. BenchmarkCheck measures a 1 KiB JSON payload with three values.
//
// What this package must never do: put a value, or a piece of one, into an error, a log line
// or a String; modify a payload (it refuses, it does not scrub); panic on an odd log value.
package egress
