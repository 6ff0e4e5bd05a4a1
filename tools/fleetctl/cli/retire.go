package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/tools/fleetctl/signer"
)

// clearWorkers is how many retained-state deletions retire keeps in flight: a QoS 1 round
// trip each, so a list of thousands over a remote broker's latency takes seconds, not hours.
const clearWorkers = 16

// retireCmd takes devices out of the fleet for good: a camera broken, sold, stolen or returned.
func retireCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("retire", stderr)
	var ids []string
	fs.Func("device", "id of a device to retire; repeatable", func(id string) error {
		if err := certs.ValidDeviceID(id); err != nil {
			return err
		}
		ids = append(ids, id)
		return nil
	})
	from := fs.String("from", "", "a file of device ids to retire, one a line ('#' starts a comment)")
	of := addOperatorFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("retire: unexpected argument %q (give ids with --device or --from)", fs.Arg(0))
	}
	if *from != "" {
		b, err := cappedfile.Read(*from, fleet.MaxDeviceListSize)
		if err != nil {
			return fmt.Errorf("retire: %w", err)
		}
		list, err := fleet.ParseDeviceList(b)
		if err != nil {
			return fmt.Errorf("retire: %s: %w", *from, err)
		}
		ids = append(ids, list...)
	}
	if len(ids) == 0 {
		return errors.New("retire: give the devices with --device ID (repeatable) or --from FILE")
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	defer f.Close()
	now := time.Now()
	done, err := f.RetireDevices(ids, now)
	if err != nil {
		return err
	}
	revoked, again := 0, false
	for _, r := range done {
		again = again || r.Already
		serials := make([]string, len(r.Revoked))
		for i, s := range r.Revoked {
			serials[i] = registry.SerialHex(s)
		}
		revoked += len(r.Revoked)
		what := "retired " + r.Device
		if r.Already {
			what = fmt.Sprintf("%s was already retired on %s", r.Device, r.Since.Format(time.RFC3339))
		}
		switch {
		case len(serials) > 0:
			fmt.Fprintf(stdout, "%s: revoked %s\n", what, strings.Join(serials, ", "))
		case r.Already:
			fmt.Fprintf(stdout, "%s: nothing issued since\n", what)
		default:
			fmt.Fprintf(stdout, "%s: it held no valid certificate\n", what)
		}
	}
	// Run again, retire finds nothing newly revoked, but the run before may have stopped
	// before it wrote the CRL: write it again where it can be.
	var crlErr error
	if revoked > 0 || (again && f.HasCAKey()) {
		crlErr = writeCRL(f, stderr, now)
	}
	// The retained state is cleared even without a CRL: that needs no key, and nothing else
	// would clear it.
	if err := clearRetired(ctx, f, of, done, stderr); err != nil {
		return errors.Join(fmt.Errorf("retire: %d devices are retired and their certificates revoked, but their retained state was not all cleared: %w; run the same command again once the broker is reachable", len(done), err), crlNotWritten(crlErr))
	}
	if crlErr != nil {
		return crlNotWritten(crlErr)
	}
	fmt.Fprintf(stdout, "%d devices retired; %d certificates revoked; their retained state is cleared and fleetctl status leaves them out.\n", len(done), revoked)
	fmt.Fprintf(stdout, "No signer issues them a certificate again, through their bootstrap identity either (fleetctl enroll --reinstate undoes it).\n")
	if revoked > 0 {
		fmt.Fprintf(stdout, "The embedded broker refuses them at once and cuts their sessions; Mosquitto reads %s when it restarts: restart it.\n", f.CRLPath())
	}
	return nil
}

// crlNotWritten is retire's error for a CRL it could not write; nil for nil.
func crlNotWritten(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("retire: retired and revoked, but the CRL (Mosquitto's crlfile) was not written: %w; run fleetctl crl where the fleet CA's key is, then restart Mosquitto", err)
}

// writeCRL writes the fleet's CRL (Mosquitto's crlfile) from the registry, under the
// registry's lock, so that it cannot overwrite a newer one a signer writes meanwhile.
func writeCRL(f *fleet.Fleet, stderr io.Writer, now time.Time) error {
	reg, err := f.OpenRegistry(logger(stderr))
	if err != nil {
		return err
	}
	defer reg.Close()
	var w signer.CRLWritten
	if err := reg.Update(func(tx *registry.Tx) (err error) {
		w, err = signer.WriteCRL(f.CRLPath(), f.CA, tx, now)
		return err
	}); err != nil {
		return err
	}
	w.Log(logger(stderr), f.CRLPath())
	return nil
}

// clearRetired deletes the retained state of the retired devices, several at a time, with a
// progress bar on w for a long list.
func clearRetired(ctx context.Context, f *fleet.Fleet, of operatorFlags, done []fleet.Retirement, w io.Writer) error {
	dctx, cancel := context.WithTimeout(ctx, *of.timeout)
	op, err := f.Dial(dctx, fleet.OperatorOptions{Broker: *of.broker})
	cancel()
	if err != nil {
		return err
	}
	defer op.Close()
	var bar *progressbar.ProgressBar
	if len(done) >= 100 {
		bar = progressbar.NewOptions(len(done), progressbar.OptionSetWriter(w), progressbar.OptionSetDescription("clearing retained state"),
			progressbar.OptionShowCount(), progressbar.OptionThrottle(statusEvery))
		defer fmt.Fprintln(w)
	}
	work := make(chan string)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for range min(clearWorkers, len(done)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := range work {
				pctx, cancel := context.WithTimeout(ctx, *of.timeout)
				err := op.ClearDevice(pctx, id)
				cancel()
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				if bar != nil {
					bar.Add(1)
				}
				mu.Unlock()
			}
		}()
	}
	for _, r := range done {
		mu.Lock()
		failed := first != nil
		mu.Unlock()
		if failed {
			break
		}
		work <- r.Device
	}
	close(work)
	wg.Wait()
	return first
}
