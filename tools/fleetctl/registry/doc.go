// Package registry is the fleet signer's log of certificates: an append-only JSON-lines file
// (fleetctl keeps it at <fleet>/signer/log.jsonl) recording every certificate the fleet
// issued — serial, device, role, epoch, token hash, request id, expiry, issue time and the
// certificate itself — and every confirmation and revocation (rotation issue, item 5).
//
// Several processes share one log: `fleetctl enroll`, any number of `fleetctl serve` signer
// instances and `fleetctl broker`. Writers append under an exclusive flock(2) on the file, one
// fsync per transaction (Registry.Update), so a decision such as "has this request been
// answered already?" and the record that answers it are atomic across processes. Readers need
// no lock: each Registry keeps an in-memory index that it extends whenever the file has grown,
// so Revoked is two stat(2) calls (the open file and the path, which a compaction replaces)
// and a map lookup, cheap enough for every broker CONNECT.
//
// A record half-written by a process that died is cut off by the next writer; a line that does
// not parse (a storage fault) is logged and skipped, never a reason to stop serving, but every
// serial it still names as revoked stays revoked, and Damaged lists it for `fleetctl check`.
// A revocation is never undone, so the CRL the signers write keeps what it listed even when the
// log lost it (signer.WriteCRL), and `fleetctl broker` refuses what either names.
//
// The log does not grow with the fleet's whole history: Compact (which every signer runs daily)
// moves the records of certificates that expired over a month ago to an archive beside it and
// replaces the log by rename, under the same lock; every Registry notices the new file on its
// next read or write.
//
// What it must never hold: a private key or a device token. Records carry certificates,
// serials and SHA-256 token hashes only (S6 in SECURITY-BAR.md); Append refuses anything that
// looks like a private key.
package registry
