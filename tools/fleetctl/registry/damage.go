package registry

import (
	"bytes"
	"regexp"
	"time"

	"github.com/camagent/camagent/certs"
)

// A line of the log that is not a record is the work of a storage fault or of a writer that
// is not fleetctl. Skipping it is right for every kind of record but one: a revocation
// skipped is a certificate admitted again, the very one an operator revoked after a breach.
// So a damaged line is searched for what it still says of revocations, and every serial it
// still names as revoked stays revoked (a revocation too many costs a device a
// re-bootstrap; one too few lets a stolen certificate back in). The CRL the signers write is
// the second copy for the damage this cannot read (the word "revoked" or the serial itself):
// see signer.WriteCRL.

// MaxDamageReported caps the damaged lines a Registry keeps the details of; Damaged counts
// them all.
const MaxDamageReported = 100

// Damage is a line of the log that is not a record.
type Damage struct {
	// Offset is where the line starts in the log.
	Offset int64
	// Err says what is wrong with it.
	Err string
	// Revoked lists the serials the line still names as revoked, which stay revoked.
	Revoked []string
}

// salvaged is a revocation read from a damaged line.
type salvaged struct {
	serial string
	device string    // "" when the line no longer names a valid one
	time   time.Time // zero when the line no longer holds a readable one
}

var (
	// A revocation record starts so: json.Marshal writes a Record's fields in their order.
	// Several may share one line, when a fault turned the newline between them into
	// something else.
	salvageRevokedRe = regexp.MustCompile(`\{"type":"revoked","serial":"([0-9a-f]{1,40})"`)
	salvageDeviceRe  = regexp.MustCompile(`^,"device":"([^"\\]{1,200})"`)
	salvageTimeRe    = regexp.MustCompile(`"time":"([^"\\]{1,40})"`)
)

// salvageRevocations returns the revocations a damaged line still names: each whose opening
// (record type and serial) is intact, with its device and time when those are intact too.
func salvageRevocations(line []byte) []salvaged {
	var out []salvaged
	ms := salvageRevokedRe.FindAllSubmatchIndex(line, -1)
	for i, m := range ms {
		end := len(line)
		if i+1 < len(ms) {
			end = ms[i+1][0]
		}
		// The rest of this record: up to the next record's start, if another follows.
		rest := line[m[1]:end]
		if next := bytes.Index(rest, []byte(`{"type":`)); next >= 0 {
			rest = rest[:next]
		}
		s := salvaged{serial: canonicalSerial(string(line[m[2]:m[3]]))}
		if d := salvageDeviceRe.FindSubmatch(rest); d != nil {
			id := string(d[1])
			if _, named := identityRole(id); named || certs.ValidDeviceID(id) == nil {
				s.device = id
			}
		}
		if tm := salvageTimeRe.FindSubmatch(rest); tm != nil {
			if t, err := time.Parse(time.RFC3339Nano, string(tm[1])); err == nil {
				s.time = t.UTC()
			}
		}
		out = append(out, s)
	}
	return out
}
