package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// ErrRetired is returned by Enroll for a device that was retired and not reinstated.
var ErrRetired = errors.New("fleet: the device was retired")

// Retirement is what RetireDevices did for one device.
type Retirement struct {
	Device string
	// Since is when the device was retired: now, or the earlier retirement it already had.
	Since time.Time
	// Already is set when the device was retired before this call.
	Already bool
	// Revoked are the serials revoked now: every certificate of the device and of its
	// bootstrap identity that was valid and not yet revoked.
	Revoked []*big.Int
}

// RetireDevices takes devices out of the fleet for good, in one registry transaction: each is
// recorded as retired, so no signer issues it a certificate again through either of its
// identities, and every certificate of it and of its bootstrap identity that is still valid is
// revoked. It refuses the whole list, retiring none, if one id is not a device id or was never
// enrolled. Retiring a retired device again revokes what was issued since, if anything. The
// caller writes the CRL and clears the devices' retained messages.
func (f *Fleet) RetireDevices(ids []string, now time.Time) ([]Retirement, error) {
	for _, id := range ids {
		if err := certs.ValidDeviceID(id); err != nil {
			return nil, fmt.Errorf("fleet: retire: %w", err)
		}
	}
	reg, err := f.enrollRegistry()
	if err != nil {
		return nil, fmt.Errorf("fleet: retire: %w", err)
	}
	var out []Retirement
	err = reg.Update(func(tx *registry.Tx) error {
		out = out[:0]
		done := map[string]bool{}
		for _, id := range ids {
			if done[id] {
				continue
			}
			done[id] = true
			if !tx.Known(id) {
				return fmt.Errorf("%s was never enrolled in this fleet (nothing was retired)", id)
			}
			r := Retirement{Device: id, Since: now.UTC()}
			if since, ok := tx.Retired(id); ok {
				r.Since, r.Already = since, true
			} else if err := tx.Append(registry.Record{Type: registry.TypeRetired, Device: id, Time: now.UTC()}); err != nil {
				return err
			}
			for _, c := range tx.DeviceCerts(id) {
				if c.IsRevoked() || !now.Before(c.NotAfter) {
					continue
				}
				if err := tx.Append(registry.Record{Type: registry.TypeRevoked, Serial: c.Serial, Device: id, Time: now.UTC()}); err != nil {
					return err
				}
				n, _ := new(big.Int).SetString(c.Serial, 16)
				r.Revoked = append(r.Revoked, n)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: retire: %w", err)
	}
	return out, nil
}

// Reinstate ends the retirement of device, so that it can be enrolled again (its old
// certificates stay revoked). It reports whether the device was retired.
func (f *Fleet) Reinstate(device string, now time.Time) (bool, error) {
	if err := certs.ValidDeviceID(device); err != nil {
		return false, fmt.Errorf("fleet: reinstate: %w", err)
	}
	reg, err := f.enrollRegistry()
	if err != nil {
		return false, fmt.Errorf("fleet: reinstate: %w", err)
	}
	was := false
	err = reg.Update(func(tx *registry.Tx) error {
		if _, was = tx.Retired(device); !was {
			return nil
		}
		return tx.Append(registry.Record{Type: registry.TypeReinstated, Device: device, Time: now.UTC()})
	})
	if err != nil {
		return false, fmt.Errorf("fleet: reinstate %s: %w", device, err)
	}
	return was, nil
}

// MaxDeviceListSize caps a device list file (ParseDeviceList): a million ids.
const MaxDeviceListSize = 64 << 20

// ParseDeviceList reads a list of device ids, one a line, as an operator writes it for a bulk
// command: white space around an id is ignored, and so are blank lines and lines starting with
// '#'. An id that is not a valid device id is an error naming its line; nothing is returned
// then. Duplicates are kept (RetireDevices takes each device once).
func ParseDeviceList(b []byte) ([]string, error) {
	if len(b) > MaxDeviceListSize {
		return nil, fmt.Errorf("fleet: device list of %d bytes, cap %d", len(b), MaxDeviceListSize)
	}
	var ids []string
	for n, line := range bytes.Split(b, []byte("\n")) {
		id := string(bytes.TrimSpace(line))
		if id == "" || id[0] == '#' {
			continue
		}
		if err := certs.ValidDeviceID(id); err != nil {
			return nil, fmt.Errorf("fleet: device list, line %d: %w", n+1, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
