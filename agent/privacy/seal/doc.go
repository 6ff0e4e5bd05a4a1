// Package seal keeps the device's personal settings sealed at rest (P3 in SECURITY-BAR.md).
//
// A device secret of 32 random bytes is made once per device (and again after a factory
// reset) in a 0600 file in the 0700 state directory. Every key the device needs for privacy
// is derived from it with HKDF-SHA256 (RFC 5869) and an info string naming its purpose, so the
// settings key, the network-tag key and any future key are independent: knowing one says
// nothing about another.
//
// Sealing uses XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) with a random 24-byte nonce: with
// a 192-bit nonce, random nonces never collide in practice, so no counter has to survive power
// loss. A sealed message is
//
//	version (1 byte, 0x01) || nonce (24 bytes) || ciphertext || Poly1305 tag (16 bytes)
//
// and its associated data binds the version and the purpose, so a message sealed for one
// purpose never opens as another, and a flipped bit anywhere is detected.
//
// # Reset and crypto-shredding
//
// Overwriting a file before removing it achieves nothing on flash: the SD card's or eMMC's
// translation layer writes the new bytes elsewhere and keeps the old block until it is
// erased. Wipe therefore simply removes the sealed files and the device secret. Once the
// secret is gone, every sealed copy anywhere — a stale flash block, a backup, a copy in a bug
// report — is unreadable: that is crypto-shredding. Its limit is the secret itself: its 32
// bytes may survive in a stale flash block until the card erases it. A secret held in a secure
// element or derived from a hardware-unique key would close that gap; this package keeps the
// secret behind one small type (Secret) so that it can be swapped for one.
//
// What this package must never do: print, log or put into an error the device secret, a
// derived key or a plaintext; accept a secret file that group or others can read; write a
// secret or sealed file non-atomically.
package seal
