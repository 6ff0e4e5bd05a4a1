// Package cli is fleetctl's command line. It parses arguments, calls the fleet, signer,
// registry and status packages and prints results; it never exits the process (main does).
//
// # Breach response, step by step
//
//	fleetctl init --dir fleet --broker mqtts://broker.example:8883
//	fleetctl broker --dir fleet               # or Mosquitto: fleetctl mosquitto-config
//	fleetctl serve --dir fleet --name s1      # the signer; run more with other names
//	fleetctl serve --dir fleet --name s2 --max-rate 600 --abort-ratio 0.2
//
//	fleetctl rotate --dir fleet --device cam-0001     # one device
//	fleetctl breach --dir fleet --incident INC-42     # every device, every grant voided
//	fleetctl status --dir fleet --wait 30m            # progress bar; non-zero exit if not converged
//
// A breach that may have reached the online signing keys also replaces them: `fleetctl keys
// rotate` (with the offline root key) makes the next key set, printing its path, and `fleetctl
// breach --incident ID --keyset PATH` publishes it inside the retained breach notice, then puts
// it in force. Every desired-state document carries the key set in force, so a device that was
// offline learns it from whichever document it reads first.
//
// Run again with the same incident id within a day (the first run timed out waiting for the
// broker, or stopped before putting the key set in force), `breach` raises the epoch no further
// while the fleet's retained notice is that incident's, says so, and only puts the key set in
// force: a second rotation wave the same day takes a new incident id. After a day the same id
// starts a new wave.
//
// Desired state is retained and versioned: `rotate` and `breach` read the retained documents
// and every device's retained state first and raise the epoch above all of them, so a device
// that was offline for months converges when it returns (R2).
//
// A lost laptop with the operator's key, or a signer host broken into: `fleetctl replace
// operator` or `fleetctl replace signer` gives the identity a new key and certificate and
// revokes every earlier one (each renewal leaves the one it replaced valid, so there may be
// two); `fleetctl serve` instances present the new one from their next connection.
//
// A breach that may have reached the broker's private key: `fleetctl replace broker` gives it a
// new key and certificate (same names); once every broker presents it, `fleetctl keys rotate
// --retire-brokers` makes a key set whose floor (broker_not_before) is its NotBefore, and
// `breach --keyset` publishes that set. Every client that holds the set, fleetctl and the
// signer included, then refuses a broker presenting an older certificate; fleetctl refuses to
// publish a set that retires the certificate of the broker it is connected to.
//
// # Revocation on Mosquitto
//
// The embedded broker (`fleetctl broker`) refuses a revoked certificate at its next CONNECT and
// cuts live sessions using it within about a second. Mosquitto learns revocations only from its
// crlfile, which `fleetctl serve` rewrites (fleet/crl.pem) after every revocation — and
// Mosquitto 2.0 reads that file only when it starts: SIGHUP reloads its ACL and certificates but
// not the CRL. Restart Mosquitto after a rotation wave to enforce the revocations; until then
// the replaced certificates still connect there (short device-certificate lifetimes bound how
// long). `fleetctl crl --out FILE` writes the CRL on demand. After enrolling devices, render
// the configuration again (`fleetctl mosquitto-config`) and send Mosquitto SIGHUP: each
// device's bootstrap identity needs its own ACL user block.
//
// # Cameras that leave the fleet
//
// `fleetctl retire --device ID` (or `--from FILE`) takes a camera out for good: its
// certificates and its bootstrap identity's are revoked, no signer issues it another, its
// retained state is cleared and `status` leaves it out, so a breach rollout is not held up by
// cameras that will never come back. `fleetctl enroll --reinstate` lets one back in.
//
// # Upkeep
//
// `fleetctl check` looks at a fleet directory (or a copy of one) without changing it and lists
// what needs doing: certificates near their end and not renewed, one revoked since the copy was
// made, a CRL that lacks revocations Mosquitto should enforce, the offline root key still on
// the machine, an aborted rollout. It exits non-zero when something has failed.
//
// # Signer instances
//
// Each `fleetctl serve --name N` keeps a persistent MQTT session (client id
// signer:default~<hash of N>) so requests queued while it restarts are not lost. The brokers
// also keep handing a share of the requests to a stopped instance's session; when an instance
// is taken out of service for good, run `fleetctl serve --name N --retire` once.
//
// Each instance also keeps its presence retained on fleet/signers/<instance> (serving, every
// 30 s; stopped), so that `status`, `breach` and `rotate` can warn when no signer serves.
//
// On a server, `broker` and `serve` run as the systemd services of the fleetctl package
// (fleetctl-broker.service, fleetctl-signer@NAME.service; packaging/README.md): they speak
// sd_notify and feed a watchdog while their loop over the registry makes progress (RunEnv).
package cli
