package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/signer"
	"github.com/camagent/camagent/tools/fleetctl/status"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// operatorFlags are the flags of every command that talks to the broker as the operator.
type operatorFlags struct {
	broker  *string
	timeout *time.Duration
}

func addOperatorFlags(fs *flag.FlagSet) operatorFlags {
	return operatorFlags{
		broker:  fs.String("broker", "", "broker URL (default: the fleet's)"),
		timeout: fs.Duration("timeout", 15*time.Second, "how long to wait for the broker: to connect, and for the retained state"),
	}
}

// statusCommand is the status --wait command that follows a rollout published with the
// fleet directory dir through of's broker: the operator copies it as printed, so it names
// the same directory and broker.
func statusCommand(dir string, of operatorFlags) string {
	s := "fleetctl status --dir " + dir
	if *of.broker != "" {
		s += " --broker " + *of.broker
	}
	return s + " --wait 10m"
}

// incidentRe is the shape of an incident id, as certs checks it when it signs the notice:
// breach checks it before it connects, with a message that names the flag.
var incidentRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// fleetState is what readFleetState learnt: the operator session, the collector it feeds,
// and the devices this copy's registry has enrolled.
type fleetState struct {
	op  *fleet.Operator
	col *status.Collector
	// enrolled holds the ids of every device the registry has issued a certificate for,
	// retired ones included; nil when the registry cannot be read or holds no device.
	enrolled map[string]bool
	// staleKeys is set when the fleet's retained desired state carries a key set newer than
	// this fleet directory's whose signing keys the directory does not hold: devices trust
	// that set, so what this directory signs may be refused. Commands that sign refuse to run.
	staleKeys error
}

// readFleetState connects as the operator, subscribed to every device's retained state and
// to the desired state, and returns once the retained messages are in the collector. Close
// the session (op) when done; it keeps feeding the collector until then.
// Retired devices (fleetctl retire) are left out of the collector's reports; if the registry
// cannot be read they are not, and a warning says so on warn.
func readFleetState(ctx context.Context, f *fleet.Fleet, of operatorFlags, warn io.Writer) (*fleetState, error) {
	return readRetained(ctx, f, of, warn, status.Filters(), true)
}

// readRetained is readFleetState reading only the retained messages of filters (a subset of
// status.Filters()), and the registry only if devices is set: for a command that needs the
// desired state's key set but not every device's state (ping).
func readRetained(ctx context.Context, f *fleet.Fleet, of operatorFlags, warn io.Writer, filters []string, devices bool) (*fleetState, error) {
	st := &fleetState{col: status.NewCollector(f.RootKey(), f.KeySet())}
	if devices {
		st.readRegistry(f, warn)
	}
	ctx, cancel := context.WithTimeout(ctx, *of.timeout)
	defer cancel()
	op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: *of.broker, Subscriptions: filters, OnMessage: st.col.Add})
	if err != nil {
		return nil, err
	}
	if err := op.Sync(ctx); err != nil {
		op.Close()
		return nil, fmt.Errorf("reading retained state: %w", err)
	}
	if err := st.catchUpKeySet(ctx, f, op, warn); err != nil {
		op.Close()
		return nil, err
	}
	st.op = op
	return st, nil
}

// readRegistry takes from f's registry the devices retired and enrolled.
func (st *fleetState) readRegistry(f *fleet.Fleet, warn io.Writer) {
	reg, err := f.OpenRegistry(nil)
	if err != nil {
		fmt.Fprintf(warn, "warning: cannot read the registry, so retired devices are counted too: %v\n", err)
		return
	}
	defer reg.Close()
	st.col.Retire(reg.RetiredDevices()...)
	// An empty registry is a copy of the fleet directory without it (OpenRegistry made an
	// empty one), not a fleet that enrolled nothing: it says nothing about devices.
	if ids := reg.Devices(); len(ids) > 0 {
		st.enrolled = make(map[string]bool, len(ids))
		for _, id := range ids {
			st.enrolled[id] = true
		}
	}
}

// catchUpKeySet looks for a key set newer than this fleet directory's in the retained desired
// state (a breach --keyset published it). When the directory holds that set's signing keys
// (the breach ran here and stopped before putting the set in force, or keys/ was copied
// here), it puts the set in force here too, sends it to viewer relays as breach does, and says
// so on warn; otherwise it sets staleKeys.
func (st *fleetState) catchUpKeySet(ctx context.Context, f *fleet.Fleet, op *fleet.Operator, warn io.Writer) error {
	ks, raw := st.col.NewerKeySet()
	if ks == nil {
		return nil
	}
	had := f.KeySet().Version
	if err := f.HoldsSigningKeys(ks); err != nil {
		st.staleKeys = fmt.Errorf("the fleet's breach notice carries key set v%d, newer than this fleet directory's v%d, and this directory does not hold its signing keys (%v): devices trust that set and may refuse what this directory signs; copy keyset.json and keys/ from the fleet directory where fleetctl keys rotate and breach --keyset ran", ks.Version, had, err)
		return nil
	}
	// Putting it in force here sends it to the relays: never through a broker it retires.
	if err := op.CheckKeySet(ks); err != nil {
		return fmt.Errorf("the fleet's breach notice carries key set v%d, newer than this fleet directory's v%d; it was not put in force here: %w", ks.Version, had, err)
	}
	if err := f.InstallKeySet(raw); err != nil {
		return fmt.Errorf("key set v%d, which the fleet's breach notice carries, could not be put in force in this fleet directory: %w", ks.Version, err)
	}
	fmt.Fprintf(warn, "key set v%d, which the fleet's breach notice carries, is now in force in this fleet directory too (it was on v%d and holds the new set's signing keys)\n", ks.Version, had)
	// The breach that published the notice may have stopped before it sent the set to the
	// relays, too.
	if err := op.PublishKeySet(ctx); err != nil {
		fmt.Fprintf(warn, "warning: key set v%d could not be sent to viewer relays (%v): run fleetctl breach again with the same incident id and --keyset\n", ks.Version, err)
		return nil
	}
	fmt.Fprintf(warn, "key set v%d sent to viewer relays (%s)\n", ks.Version, topic.FleetKeySet)
	return nil
}

// refuseUnknown returns an error if device is neither in the registry nor on the broker: a
// mistyped id, whose retained desired state status would count behind for good and retire
// could not clear (it was never enrolled). Without a registry that knows devices it cannot
// tell, and lets it pass.
func (st *fleetState) refuseUnknown(cmd, device string) error {
	if _, reported := st.col.DeviceEpoch(device); reported || st.enrolled == nil || st.enrolled[device] {
		return nil
	}
	return fmt.Errorf("%s: %s was never enrolled in this fleet (the fleet directory's registry does not know it) and has published no state: check the id; nothing was published", cmd, device)
}

func rotateCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("rotate", stderr)
	device := fs.String("device", "", "device id: raise this device's desired credential epoch")
	all := fs.Bool("all", false, "raise the fleet-wide desired credential epoch: every device rotates")
	of := addOperatorFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if (*device == "") == !*all {
		return errors.New("rotate: give exactly one of --device ID and --all")
	}
	if *device != "" {
		if err := certs.ValidDeviceID(*device); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	st, err := readFleetState(ctx, f, of, stderr)
	if err != nil {
		return fmt.Errorf("rotate: %w; nothing was published", err)
	}
	defer st.op.Close()
	op, col := st.op, st.col
	if st.staleKeys != nil {
		return fmt.Errorf("rotate: %w; nothing was published", st.staleKeys)
	}
	if *device != "" {
		if err := refuseRetired(col, "rotate", *device); err != nil {
			return err
		}
		if err := st.refuseUnknown("rotate", *device); err != nil {
			return err
		}
	}
	if *device == "" {
		// The last fleet-wide rotation reached only some shards (its publication broke off):
		// running the same command again finishes it rather than starting another wave.
		done, err := completeFleet(ctx, op, col, *of.timeout, stdout)
		if err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
		if done {
			fmt.Fprintf(stdout, "run rotate --all again for another rotation wave; follow this one with %s\n", statusCommand(*dir, of))
			return nil
		}
	}
	d := certs.Desired{Target: certs.TargetFleet, Epoch: col.MaxEpoch() + 1}
	if *device != "" {
		cur, known := col.DeviceEpoch(*device)
		d = certs.Desired{Target: *device, Epoch: max(col.DesiredEpoch(*device), cur) + 1}
		if !known {
			fmt.Fprintf(stderr, "rotate: %s has published no state; it will rotate when it connects\n", *device)
		}
	}
	if err := aboveRetained(f, col, stderr); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, *of.timeout)
	defer cancel()
	got, err := op.PublishDesired(pctx, d, time.Now())
	if err != nil {
		return err
	}
	target := "every device"
	if *device != "" {
		target = *device
	}
	fmt.Fprintf(stdout, "desired credential epoch of %s raised to %d (version %d); follow it with %s\n", target, got.Epoch, got.Version, statusCommand(*dir, of))
	warnAborted(f, *dir, stderr)
	warnSigners(col, stderr)
	return nil
}

func breachCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("breach", stderr)
	incident := fs.String("incident", "", "incident id for the record (letters, digits, '.', '_', '-'); run again with the same id within a day, breach raises nothing again while the fleet's notice is this incident's")
	keyset := fs.String("keyset", "", "a key set made by fleetctl keys rotate, to publish with the breach notice and put in force")
	of := addOperatorFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *incident == "" {
		return errors.New("breach: --incident is required")
	}
	if !incidentRe.MatchString(*incident) {
		return fmt.Errorf("breach: --incident %q: use letters, digits, '.', '_' and '-' only, at most 64 (INC-2019-12); nothing was published", *incident)
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	var ksb []byte
	var ks *certs.KeySet
	inForce := false // the same command ran to the end before
	if *keyset != "" {
		ksb, err = cappedfile.Read(*keyset, certs.MaxKeySetSize)
		switch {
		case errors.Is(err, os.ErrNotExist) && filepath.Base(*keyset) == fleet.PendingKeySetName(f.KeySet().Version):
			// The pending copy is removed when the set is put in force: this is the set in
			// force, and the notice that carries it was published before.
			ksb, inForce = f.KeySetBytes(), true
		case err != nil:
			return fmt.Errorf("breach: %w", err)
		default:
			if ks, err = f.OpenNewKeySet(ksb); err != nil {
				return fmt.Errorf("breach: --keyset %s: %w", *keyset, err)
			}
		}
	}
	st, err := readFleetState(ctx, f, of, stderr)
	if err != nil {
		return fmt.Errorf("breach: %w; nothing was published", err)
	}
	defer st.op.Close()
	op, col := st.op, st.col
	if st.staleKeys != nil {
		return fmt.Errorf("breach: %w; nothing was published", st.staleKeys)
	}
	if ks != nil {
		// Before anything is published: a set that retires the broker's certificate would cut
		// every device that took it off this broker.
		if err := op.CheckKeySet(ks); err != nil {
			return fmt.Errorf("breach: --keyset %s: %w; nothing was published", *keyset, err)
		}
		if ks.BrokerNotBefore > f.KeySet().BrokerNotBefore && *of.broker != "" && *of.broker != f.Meta.Broker {
			// The check saw the broker at --broker; the cameras use the fleet's URL.
			fmt.Fprintf(stderr, "warning: key set v%d retires broker certificates issued before %s; only the broker at %s was seen to present a newer one, and the cameras connect to %s: make sure every broker there presents the new certificate, or those cameras stay off it until it does\n",
				ks.Version, time.Unix(ks.BrokerNotBefore, 0).UTC().Format(time.RFC3339), *of.broker, f.Meta.Broker)
		}
	}
	if ks != nil && f.KeySet().Version >= ks.Version {
		// Reading the retained notice put a set in force here: this one, published before by a
		// run that stopped short of putting it in force, or another of the same version.
		if !sameJSON(f.KeySetBytes(), ksb) {
			return fmt.Errorf("breach: --keyset %s: key set v%d is not newer than the fleet's v%d, which its breach notice carries; nothing was published", *keyset, ks.Version, f.KeySet().Version)
		}
		ks, inForce = nil, true
	}
	// Run again with the same incident id soon after (the first run timed out waiting for
	// the broker, or stopped before putting the key set in force), breach does not start a
	// second rotation wave through the whole fleet when the retained notice already is this
	// one. Later, the same id is a new wave: an operator reusing an id must not be told the
	// fleet rotates when nothing would.
	prev := col.FleetDesired()
	var published time.Time
	if prev != nil {
		published = time.Unix(0, int64(min(prev.Version, math.MaxInt64))) // versions are fleetctl's Unix-nanosecond sequence
	}
	_, behind := col.FleetShardsBehind()
	if prev != nil && prev.Incident == *incident && (ksb == nil || sameJSON(prev.KeySet, ksb)) && len(behind) > 0 {
		// The same breach, whose notice reached only some shards: finish publishing it, however
		// long ago, since the devices of the others have not rotated.
		if _, err := completeFleet(ctx, op, col, *of.timeout, stdout); err != nil {
			return fmt.Errorf("breach: %w", err)
		}
	} else if prev != nil && prev.Incident == *incident && (ksb == nil || sameJSON(prev.KeySet, ksb)) && time.Since(published) < breachRetryWindow {
		fmt.Fprintf(stdout, "breach %s: already published %s ago: every device rotates to epoch %d (version %d); not raising it again (for another rotation wave, give a new incident id)\n",
			prev.Incident, time.Since(published).Round(time.Second), prev.Epoch, prev.Version)
	} else {
		if prev != nil && prev.Incident != "" && prev.Incident != *incident && time.Since(published) < breachRetryWindow {
			// A retry with a mistyped id is a second rotation wave through the whole fleet.
			fmt.Fprintf(stderr, "note: the fleet's last breach notice, %s, was published %s ago; %s starts another rotation wave through every device (a retry of %s takes its id)\n",
				prev.Incident, time.Since(published).Round(time.Second), *incident, prev.Incident)
		}
		if err := aboveRetained(f, col, stderr); err != nil {
			return fmt.Errorf("breach: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, *of.timeout)
		defer cancel()
		got, err := op.PublishDesired(pctx, certs.Desired{Target: certs.TargetFleet, Epoch: col.MaxEpoch() + 1, Incident: *incident, KeySet: ksb}, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "breach %s: every device rotates its key, certificate and token to epoch %d; grants from earlier epochs are void (version %d)\n", got.Incident, got.Epoch, got.Version)
	}
	if inForce {
		fmt.Fprintf(stdout, "key set v%d is already in force (an earlier breach --keyset put it there)\n", f.KeySet().Version)
	}
	if ks != nil {
		// Only now: the breach notice that carries the set is out, so devices can learn the
		// keys that sign from here on.
		if err := f.InstallKeySet(ksb); err != nil {
			return fmt.Errorf("breach: the notice carries key set v%d but it could not be put in force here: %w", ks.Version, err)
		}
		fmt.Fprintf(stdout, "key set v%d published and in force (%d command keys, %d grant keys)\n", ks.Version, len(ks.CommandKeys), len(ks.GrantKeys))
	}
	if ks != nil || inForce {
		// After the notice, never before: relays then refuse grants of the dropped keys, which
		// devices still holding the old set would take. Run again, breach publishes it again.
		pctx, cancel := context.WithTimeout(ctx, *of.timeout)
		defer cancel()
		if err := op.PublishKeySet(pctx); err != nil {
			return fmt.Errorf("breach: the key set is in force, but viewer relays could not be sent it (run the same command again): %w", err)
		}
		fmt.Fprintf(stdout, "key set v%d sent to viewer relays (%s): camview relays that run with an identity of their own check grants with it from now on\n", f.KeySet().Version, topic.FleetKeySet)
	}
	fmt.Fprintln(stdout, "follow it with:", statusCommand(*dir, of))
	warnAborted(f, *dir, stderr)
	warnSigners(col, stderr)
	return nil
}

// aboveRetained makes the next desired-state version this fleet directory hands out exceed
// every retained document's, which another copy of the directory (another operator's machine,
// its clock ahead of this one's) may have published: a device ignores a document whose version
// is not above the last it accepted on that topic, so the new one would never reach it.
func aboveRetained(f *fleet.Fleet, col *status.Collector, w io.Writer) error {
	v := col.MaxVersion()
	if ahead := time.Duration(int64(min(v, math.MaxInt64)) - time.Now().UnixNano()); ahead > time.Minute {
		fmt.Fprintf(w, "warning: the retained desired state was published by a clock %s ahead of this machine's; publishing above its version\n", ahead.Round(time.Second))
	}
	return f.AdvanceSeq(v)
}

// completeFleet publishes the newest fleet-wide desired state on the shards that do not hold
// it, if any (a publication that broke off part-way: fleet.PartialError), and reports whether
// there were any. It publishes the document as signed, so nothing is raised again: the devices
// that already have it ignore it.
func completeFleet(ctx context.Context, op *fleet.Operator, col *status.Collector, timeout time.Duration, stdout io.Writer) (bool, error) {
	raw, behind := col.FleetShardsBehind()
	if len(behind) == 0 {
		return false, nil
	}
	d := col.FleetDesired()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := op.RepublishFleetDesired(pctx, raw, behind); err != nil {
		return true, err
	}
	fmt.Fprintf(stdout, "the fleet-wide desired state of epoch %d (version %d%s) had reached %d of %d shards; now published on the other %d: every device rotates to epoch %d\n",
		d.Epoch, d.Version, incidentNote(d.Incident), topic.FleetShards-len(behind), topic.FleetShards, len(behind), d.Epoch)
	return true, nil
}

func incidentNote(incident string) string {
	if incident == "" {
		return ""
	}
	return ", breach " + incident
}

// warnPartialFleet says so on w when the newest fleet-wide desired state is not on every
// shard: the devices of the others do not have it and cannot converge.
func warnPartialFleet(r status.Report, dir string, of operatorFlags, w io.Writer) {
	if len(r.FleetShardsBehind) == 0 {
		return
	}
	again := "fleetctl rotate --all --dir " + dir
	if r.Incident != "" {
		again = "fleetctl breach --dir " + dir + " --incident " + r.Incident
	}
	if *of.broker != "" {
		again += " --broker " + *of.broker
	}
	fmt.Fprintf(w, "warning: the fleet-wide desired state of epoch %d reached %d of %d shards (its publication broke off): the devices of shards %s do not have it and stay behind; %s publishes it on them\n",
		r.FleetEpoch, topic.FleetShards-len(r.FleetShardsBehind), topic.FleetShards, someShards(r.FleetShardsBehind), again)
}

// someShards lists shard names for a message, the first ten and how many more.
func someShards(shards []string) string {
	if len(shards) > 10 {
		return fmt.Sprintf("%s and %d more", strings.Join(shards[:10], ", "), len(shards)-10)
	}
	return strings.Join(shards, ", ")
}

// breachRetryWindow is how long after a breach notice the same incident id is taken for a
// retry of the same breach rather than a new wave.
const breachRetryWindow = 24 * time.Hour

// sameJSON reports whether a and b are the same JSON text but for insignificant white space:
// a key set as read from its file, and as a signed document carries it.
func sameJSON(a, b []byte) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// warnAborted says so on w when the signers' rollout controls aborted the last rollout: until
// someone resumes it no certificate is issued, so a breach or rotation just published would
// make no progress, `status --wait` would only show it stalling, and scheduled renewals fail.
func warnAborted(f *fleet.Fleet, dir string, w io.Writer) {
	st, err := signer.LoadRollout(f.RolloutPath())
	if err != nil {
		fmt.Fprintf(w, "warning: cannot read the rollout state: %v\n", err)
		return
	}
	if st.Aborted {
		fmt.Fprintf(w, "WARNING: the signers aborted the last rollout at %s (%s): no device rotates until you run: fleetctl rollout resume --dir %s\n",
			st.AbortedAt.UTC().Format(time.RFC3339), st.Reason, dir)
	}
}

// warnLostDesired warns when devices report a credential epoch above every desired state the
// broker holds for them. Only a desired state raises an epoch (a renewal keeps it), so the
// broker has lost the one that did: a retained store lost, a broker replaced. A device that
// was offline meanwhile will never learn of that rotation.
func warnLostDesired(r status.Report, col *status.Collector, w io.Writer) {
	var ahead []status.Device
	var top uint64
	for _, d := range r.Devices {
		if !d.NoState && d.Epoch > d.DesiredEpoch {
			ahead = append(ahead, d)
			top = max(top, d.Epoch)
		}
	}
	if len(ahead) == 0 {
		return
	}
	fmt.Fprintf(w, "warning: devices at a credential epoch above any desired state the broker holds for them: %d (up to epoch %d: %s); the broker has lost the desired state that raised it (its retained store lost, or a new broker), so a device that was offline meanwhile will not rotate; publish it again with fleetctl rotate --all (every device rotates once more, to epoch %d)\n",
		len(ahead), top, someIDs(ahead, nil), col.MaxEpoch()+1)
}

// warnSigners says so on w when, by the signers' retained presence, no signer serves: a
// rollout would wait for one, and so would the devices' scheduled renewals.
func warnSigners(col *status.Collector, w io.Writer) {
	if msg := status.SignerWarning(col.Signers(), time.Now()); msg != "" {
		fmt.Fprintf(w, "WARNING: %s\n", msg)
	}
}

// parseDays parses a duration the way time.ParseDuration does, and also a whole number of
// days, "60d", the unit an operator thinks of cameras gone quiet in.
func parseDays(v string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(v, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number of days", v)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	return time.ParseDuration(v)
}

// refuseRetired returns an error if device was retired (fleetctl retire), as readFleetState
// told col: a command for it would wait for a device that is out of the fleet.
func refuseRetired(col *status.Collector, cmd, device string) error {
	if col.Retired(device) {
		return fmt.Errorf("%s: %s was retired (fleetctl retire); enroll it again with fleetctl enroll --reinstate first", cmd, device)
	}
	return nil
}

// statusEvery bounds how often --wait recomputes the report while messages stream in.
const statusEvery = 200 * time.Millisecond

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, dir := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	wait := fs.Duration("wait", 0, "follow the rollout with a progress bar until every enrolled device (the registry's, retired ones left out) converged, for at most this long; exit non-zero if one did not, or if no device is enrolled")
	var silent time.Duration
	fs.Func("silent-for", "instead of the report, list the devices not heard from for this long (e.g. 60d or 1000h): whose last state is older, or that never reported one; one id a line, for fleetctl retire --from", func(v string) error {
		d, err := parseDays(v)
		if err == nil && d <= 0 {
			err = errors.New("must be positive")
		}
		silent = d
		return err
	})
	of := addOperatorFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if silent > 0 && (*wait > 0 || *asJSON) {
		return errors.New("status: --silent-for lists device ids; it goes with neither --wait nor --json")
	}
	f, err := fleet.Open(*dir)
	if err != nil {
		return err
	}
	st, err := readFleetState(ctx, f, of, stderr)
	if err != nil {
		return err
	}
	defer st.op.Close()
	op, col := st.op, st.col
	// The devices that must converge are the registry's enrolled ones, whether or not the
	// broker holds anything of them: a broker that lost its retained store, or a camera that
	// never connected, must not pass for a converged fleet. Without a registry that knows
	// devices (unreadable, or a copy of the fleet directory without it) only the broker's
	// devices are known, and a warning says so.
	if st.enrolled != nil {
		col.Enroll(slices.Sorted(maps.Keys(st.enrolled))...)
	}
	r := col.Report()
	if silent > 0 {
		// The report lists every enrolled device (the registry's, the broker's without one);
		// never one the registry has not enrolled, which retire --from would refuse.
		since := time.Now().Add(-silent)
		var ids []string
		for _, d := range r.Devices {
			if d.Updated.Before(since) {
				ids = append(ids, d.ID)
			}
		}
		fmt.Fprintf(stdout, "# devices not heard from since %s (no state published since, or never), of %d; retired devices left out\n", since.UTC().Format(time.RFC3339), r.Total)
		for _, id := range ids {
			fmt.Fprintln(stdout, id)
		}
		return nil
	}
	if r.Source == status.SourceBroker && r.Total > 0 {
		fmt.Fprintf(stderr, "warning: this fleet directory's registry lists no enrolled device, or could not be read: counting the %d devices the broker holds state of, which leaves out any enrolled device that never published one, or whose state the broker lost; run status where the signers' registry (%s) is\n", r.Total, f.RegistryPath())
	}
	if n := len(r.NotEnrolled); n > 0 {
		fmt.Fprintf(stderr, "warning: the broker holds state of %d devices this fleet directory's registry has not enrolled, left out of the counts: %s; if they were enrolled from another copy of the fleet directory, run status where the signers' registry is\n", n, someIDs(r.NotEnrolled, nil))
	}
	warnLostDesired(r, col, stderr)
	warnPartialFleet(r, *dir, of, stderr)
	if st.staleKeys != nil {
		fmt.Fprintf(stderr, "warning: %v\n", st.staleKeys)
	}
	// Before a --wait that could only watch it stall: and even a converged fleet needs the
	// signers for its scheduled renewals.
	warnAborted(f, *dir, stderr)
	warnSigners(col, stderr)
	write := func(r status.Report) error {
		if *asJSON {
			return r.WriteJSON(stdout)
		}
		return r.WriteTable(stdout)
	}
	if *wait > 0 && r.Total == 0 {
		// Nothing to wait for is not a converged fleet: say so plainly, and fail, so that a
		// script following a breach does not take it for one.
		if err := write(r); err != nil {
			return err
		}
		if r.Source == status.SourceRegistry {
			return fmt.Errorf("status: no devices enrolled: the registry (%s) lists none that is not retired; nothing to wait for", f.RegistryPath())
		}
		return fmt.Errorf("status: no devices enrolled: the registry (%s) lists none, or could not be read, and the broker holds no device state; nothing to wait for", f.RegistryPath())
	}
	if *wait > 0 {
		r, err = follow(ctx, col, *wait, stderr, op.Client().Reconnect, op.Client().Connected)
		if err != nil {
			// Ctrl-C: what was seen so far is still worth showing, and the operator must hear
			// that stopping to watch stopped nothing else.
			if werr := write(r); werr != nil {
				return werr
			}
			return fmt.Errorf("status: stopped watching (%w): %d of %d devices converged (%d rotating, %d failed, %d behind); the rollout goes on without it: fleetctl status --dir %s shows it again",
				err, r.Counts.Converged, r.Total, r.Counts.Rotating, r.Counts.Failed, r.Counts.Behind, *dir)
		}
	}
	if err := write(r); err != nil {
		return err
	}
	if *wait > 0 && !r.Converged {
		hint := ""
		if r.Counts.Rotating+r.Counts.Behind > 0 {
			hint = "; a device rotates only while a signer runs (fleetctl serve, its log says what it refused) and it can reach the broker"
			if w := r.SignerWarning(time.Now()); w != "" {
				hint = "; " + w
			}
		}
		if r.NoState > 0 {
			hint += fmt.Sprintf("; the broker holds no state of %d of the %d devices (%s): they have not published one since its retained store began (never connected, or a broker that lost its retained store and has not heard from them since: each publishes again when it connects)",
				r.NoState, r.Total, someIDs(r.Devices, func(d status.Device) bool { return d.NoState }))
		}
		return fmt.Errorf("status: not converged within %s: %d of %d devices converged (%d rotating, %d failed, %d behind)%s",
			*wait, r.Counts.Converged, r.Total, r.Counts.Rotating, r.Counts.Failed, r.Counts.Behind, hint)
	}
	return nil
}

// someIDs lists the ids of the devices keep selects (nil: all), the first ten and how many
// more, for a message.
func someIDs(devices []status.Device, keep func(status.Device) bool) string {
	const most = 10
	var ids []string
	n := 0
	for _, d := range devices {
		if keep != nil && !keep(d) {
			continue
		}
		if n++; n <= most {
			ids = append(ids, d.ID)
		}
	}
	if n > most {
		return fmt.Sprintf("%s and %d more", strings.Join(ids, ", "), n-most)
	}
	return strings.Join(ids, ", ")
}

// stallResync is how long follow waits without news before it reads the retained state again;
// each read in a row without news doubles it, up to maxStallResync.
var stallResync, maxStallResync = 5 * time.Second, time.Minute

// follow shows a progress bar on w while devices converge, until all have or wait has passed,
// and returns the last report. When nothing changed for a while and the rollout has not
// converged it calls resync, which must make the broker send the retained state again (a new
// connection and subscription): a long-lived subscription can hold a device's older state for
// good when, across a broker restart, the broker sends the retained copy it read before the
// device's newer publish after that publish itself (docs/scale-out.md, item 3). connected
// reports whether the session to the broker is up: while it is not, the bar says so, since
// what it shows is then no longer news; nil counts it as always up.
func follow(ctx context.Context, col *status.Collector, wait time.Duration, w io.Writer, resync func(), connected func() bool) (status.Report, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	stall := stallResync
	quiet := time.NewTimer(stall)
	defer quiet.Stop()
	r := col.Report()
	bar := progressbar.NewOptions(max(r.Total, 1),
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("converged"),
		progressbar.OptionShowCount(),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetPredictTime(false),
		// No throttle: the loop below recomputes at most every statusEvery, and a throttled
		// bar drops the render of the last change before a quiet spell, showing a count that
		// is no longer true until the next one.
	)
	// The elapsed time moves on while nothing changes, so that a quiet rollout does not
	// look like a hung command.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		changed := col.Changed()
		r = col.Report()
		bar.ChangeMax(max(r.Total, 1))
		desc := fmt.Sprintf("converged (%d rotating, %d failed, %d behind)", r.Counts.Rotating, r.Counts.Failed, r.Counts.Behind)
		if r.NoState > 0 {
			desc = fmt.Sprintf("converged (%d rotating, %d failed, %d behind, %d of them with no state)", r.Counts.Rotating, r.Counts.Failed, r.Counts.Behind, r.NoState)
		}
		if !r.Converged && r.SignerWarning(time.Now()) != "" {
			desc += " NO SIGNER SERVES"
		}
		if connected != nil && !connected() {
			desc += " BROKER CONNECTION LOST, reconnecting"
		}
		bar.Describe(desc)
		if r.Converged {
			bar.Set(max(r.Total, 1))
			bar.Finish()
			fmt.Fprintln(w)
			return r, nil
		}
		bar.Set(r.Counts.Converged)
		select {
		case <-changed:
			stall = stallResync
			quiet.Reset(stall)
		case <-tick.C:
			continue // a render, with the elapsed time
		case <-quiet.C:
			resync()
			stall = min(2*stall, maxStallResync)
			quiet.Reset(stall)
			continue
		case <-deadline.C:
			// A state that converged the fleet may have landed since r was computed.
			fmt.Fprintln(w)
			return col.Report(), nil
		case <-ctx.Done():
			fmt.Fprintln(w)
			return col.Report(), ctx.Err()
		}
		// Let a burst of state messages land before computing the next report.
		select {
		case <-time.After(statusEvery):
		case <-deadline.C:
			fmt.Fprintln(w)
			return col.Report(), nil
		case <-ctx.Done():
			fmt.Fprintln(w)
			return col.Report(), ctx.Err()
		}
	}
}
