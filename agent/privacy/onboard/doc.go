// Package onboard parses the setup payload a phone app hands a new camera, as the text of a QR
// code or a file, into a Setup: the Wi-Fi network, the owner's claim token, the camera's
// nickname and its time zone.
//
// # The payload
//
// The format extends the Wi-Fi QR convention phones already understand (ZXing's "WIFI:"):
//
//	CAMSETUP:V:1;S:<ssid>;T:WPA;P:<passphrase>;C:<claim>;N:<nickname>;Z:<time zone>;H:true;;
//
// A payload is the prefix "CAMSETUP:", then fields "K:value;" and a final ";" (so it ends in
// ";;"), optionally followed by one "\n" or "\r\n" (a file written by echo). Keys are single
// upper-case letters:
//
//	V  format version; must be the first field and must be 1            required
//	S  SSID, 1–32 bytes of UTF-8 without control characters             required
//	T  security: WPA (WPA/WPA2/WPA3 personal) or nopass                  required
//	P  WPA passphrase: 8–63 printable ASCII characters, or 64 hex digits
//	   (a raw PSK); required for T:WPA, absent or empty for T:nopass
//	C  owner claim token: 16–128 characters of base64url (A–Z a–z 0–9 - _),
//	   which includes hex                                                required
//	N  nickname: at most 64 characters of UTF-8, no control, line
//	   separator or bidirectional-override characters; empty = none       optional
//	Z  time zone: an IANA name such as Europe/Paris or UTC (syntax only);
//	   empty = UTC                                                      optional
//	H  hidden network: true or false                                     optional
//
// Fields after V may come in any order. In a value, the characters \ ; , : and " must be
// escaped with a backslash (\\ \; \, \: \"), as in the Wi-Fi QR convention; an unescaped one,
// or a backslash before any other character, is refused, so every Setup has exactly one
// spelling per field order. The whole payload is at most MaxPayload bytes of valid UTF-8.
// Unknown keys, repeated keys, missing required fields and anything after the final ";;" are
// refused.
//
// # Errors
//
// Errors are *FieldError values (matching ErrInvalid) that name the field and say what is
// wrong with it — "passphrase: 5 characters, need 8..63" — and never quote a value: a payload
// that failed to parse may still hold a real passphrase, and errors end up in logs.
//
// What this package must never do: echo a value from a payload in an error, print a Setup's
// SSID, passphrase or nickname (Setup's String, Format, LogValue and MarshalJSON redact them,
// and show the claim token only as a short hash), or accept a payload it could not encode back
// exactly.
package onboard
