package seal

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"net"
	"strings"
)

// NetworkTagSize is the length of a network tag in bytes before hex encoding (128 bits).
const NetworkTagSize = 16

// NetworkTag returns a tag that changes when the camera's network changes, for the cloud to
// see "the network changed" without learning which network it is:
//
//	hex(HMAC-SHA256(HKDF(secret, "camagent/v1/network-tag"), len(ssid) || ssid || len(bssid) || bssid)[:16])
//
// The key is derived from the device secret, so one device gets the same tag for the same
// network every time, while two devices on the same network get unrelated tags: tags cannot be
// joined across devices, and a tag does not reveal its SSID to anyone without the device
// secret (a dictionary of SSIDs is useless without the key). After a reset the secret is new
// and so are the tags. bssid may be ""; a MAC address is normalised (case, separators) first.
// Lengths are prefixed so that no two (ssid, bssid) pairs share an input.
func NetworkTag(sec *Secret, ssid, bssid string) string {
	if hw, err := net.ParseMAC(bssid); err == nil {
		bssid = hw.String()
	} else {
		bssid = strings.ToLower(bssid)
	}
	m := hmac.New(sha256.New, sec.derive("camagent/v1/network-tag", sha256.Size))
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(ssid)))
	m.Write(n[:])
	m.Write([]byte(ssid))
	binary.BigEndian.PutUint32(n[:], uint32(len(bssid)))
	m.Write(n[:])
	m.Write([]byte(bssid))
	return hex.EncodeToString(m.Sum(nil)[:NetworkTagSize])
}
