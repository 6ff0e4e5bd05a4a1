package registry

import (
	"math/big"
	"sort"
	"time"

	"github.com/camagent/camagent/certs"
)

// Cert is what the log says about one issued certificate.
type Cert struct {
	Serial    string
	Device    string
	Role      certs.Role
	Via       string
	Epoch     uint64
	TokenHash string
	ReqID     string
	NotAfter  time.Time
	// Issued is the time of the issued record.
	Issued time.Time
	// Confirmed is the time of the first confirmation, or zero.
	Confirmed time.Time
	// Revoked is the time of the revocation, or zero.
	Revoked time.Time
}

// IsRevoked reports whether the certificate was revoked.
func (c Cert) IsRevoked() bool { return !c.Revoked.IsZero() }

// IsConfirmed reports whether the device confirmed the certificate.
func (c Cert) IsConfirmed() bool { return !c.Confirmed.IsZero() }

// Revocation is one revoked serial.
type Revocation struct {
	Serial *big.Int
	// Device is the device the serial belonged to.
	Device string
	// Time is when it was revoked.
	Time time.Time
	// NotAfter is the certificate's expiry, or zero if the log does not hold the certificate.
	NotAfter time.Time
}

// Outcome counts what became of the certificates issued for rotations (ViaCSR and ViaBoot) in
// a period, for the signer's abort threshold.
type Outcome struct {
	// Issued counts every certificate issued in the period.
	Issued int
	// Confirmed counts those confirmed within the timeout.
	Confirmed int
	// Failed counts those not confirmed within the timeout, which has passed.
	Failed int
	// Pending counts those whose timeout has not passed yet and that are not confirmed.
	Pending int
}

// entry is the index's record of one issued certificate.
type entry struct {
	Cert
	off int64  // where its issued record starts in the file
	der []byte // the certificate while its record is not yet in the file
}

// index is the in-memory state the log describes.
type index struct {
	serials     map[string]*entry
	devices     map[string][]*entry // in issue order
	issues      []*entry            // ViaCSR and ViaBoot, in log order
	revoked     map[string]bool
	revocations []Revocation         // in log order
	retired     map[string]time.Time // device id → when it was retired, while it is
	records     int
}

func newIndex() *index {
	return &index{serials: map[string]*entry{}, devices: map[string][]*entry{}, revoked: map[string]bool{}, retired: map[string]time.Time{}}
}

// apply adds one record read from (or about to be written to) the file at off.
func (x *index) apply(r *Record, off int64, der []byte) {
	x.records++
	switch r.Type {
	case TypeIssued:
		if x.serials[r.Serial] != nil {
			return // a duplicate: serials are random 127-bit numbers, so only a replayed line
		}
		e := &entry{Cert: Cert{
			Serial: r.Serial, Device: r.Device, Role: r.Role, Via: r.Via, Epoch: r.Epoch,
			TokenHash: r.TokenHash, ReqID: r.ReqID, NotAfter: time.Unix(r.NotAfter, 0).UTC(), Issued: r.Time,
		}, off: off, der: der}
		x.serials[r.Serial] = e
		x.devices[r.Device] = append(x.devices[r.Device], e)
		if r.Via == ViaCSR || r.Via == ViaBoot {
			x.issues = append(x.issues, e)
		}
	case TypeConfirmed:
		if e := x.serials[r.Serial]; e != nil && e.Device == r.Device && e.Confirmed.IsZero() {
			e.Confirmed = r.Time
		}
	case TypeRevoked:
		serial, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			return
		}
		hex := SerialHex(serial) // canonicalSerial
		if x.revoked[hex] {
			return
		}
		x.revoked[hex] = true
		rv := Revocation{Serial: serial, Device: r.Device, Time: r.Time}
		if e := x.serials[hex]; e != nil {
			e.Revoked = r.Time
			rv.NotAfter = e.NotAfter
		}
		x.revocations = append(x.revocations, rv)
	case TypeRetired:
		if _, ok := x.retired[r.Device]; !ok {
			x.retired[r.Device] = r.Time
		}
	case TypeReinstated:
		delete(x.retired, r.Device)
	}
}

func (x *index) retiredDevices() []string {
	out := make([]string, 0, len(x.retired))
	for id := range x.retired {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func (x *index) cert(serial string) (Cert, bool) {
	e := x.serials[serial]
	if e == nil {
		return Cert{}, false
	}
	return e.Cert, true
}

func (x *index) deviceCerts(device string) []Cert {
	es := x.devices[device]
	out := make([]Cert, len(es))
	for i, e := range es {
		out[i] = e.Cert
	}
	return out
}

func (x *index) known(device string) bool {
	for _, e := range x.devices[device] {
		if e.Role == certs.RoleDevice {
			return true
		}
	}
	return false
}

func (x *index) findRequest(device, reqID string) (*entry, bool) {
	es := x.devices[device]
	for i := len(es) - 1; i >= 0; i-- {
		if e := es[i]; e.Role == certs.RoleDevice && e.ReqID == reqID && reqID != "" {
			return e, true
		}
	}
	return nil, false
}

func (x *index) issuesFrom(from int) []Cert {
	if from < 0 {
		from = 0
	}
	if from >= len(x.issues) {
		return nil
	}
	out := make([]Cert, 0, len(x.issues)-from)
	for _, e := range x.issues[from:] {
		out = append(out, e.Cert)
	}
	return out
}

func (x *index) outcomes(since, now time.Time, timeout time.Duration) Outcome {
	// Records are appended in time order up to the clock differences of the processes that
	// wrote them, so a binary search is close enough for a rollout's statistics.
	i := sort.Search(len(x.issues), func(i int) bool { return !x.issues[i].Issued.Before(since) })
	var o Outcome
	for _, e := range x.issues[i:] {
		o.Issued++
		deadline := e.Issued.Add(timeout)
		switch {
		case !e.Confirmed.IsZero() && !e.Confirmed.After(deadline):
			o.Confirmed++
		case now.After(deadline):
			o.Failed++
		default:
			o.Pending++
		}
	}
	return o
}

func (x *index) revocationsFrom(from int) []Revocation {
	if from < 0 {
		from = 0
	}
	if from >= len(x.revocations) {
		return nil
	}
	return append([]Revocation(nil), x.revocations[from:]...)
}

func (x *index) deviceIDs() []string {
	out := make([]string, 0, len(x.devices))
	for id := range x.devices {
		if _, named := identityRole(id); !named {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// canonicalSerial returns serial (hex) as fleetctl writes it, without leading zeros: another
// writer, or a fault that turned a leading digit into a 0, may not, and every lookup is by
// the canonical form. A serial that is not hex is returned as it is.
func canonicalSerial(serial string) string {
	n, ok := new(big.Int).SetString(serial, 16)
	if !ok {
		return serial
	}
	return SerialHex(n)
}
