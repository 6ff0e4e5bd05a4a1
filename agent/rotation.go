package agent

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/cappedfile"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// Rotation steps passed to Config.AfterStep, in order.
const (
	StepPending   = "pending"   // next key and token made, journal says pending
	StepRequested = "requested" // CSR published and acknowledged by the broker
	StepIssued    = "issued"    // certificate verified and stored, journal says issued
	StepSwitched  = "switched"  // connected with the new certificate
	StepConfirmed = "confirmed" // confirmation acknowledged by the broker
	StepCommitted = "committed" // journal says the new generation is active
	StepWiped     = "wiped"     // the old generation's secrets are gone
)

// Steps lists the rotation steps in order.
var Steps = []string{StepPending, StepRequested, StepIssued, StepSwitched, StepConfirmed, StepCommitted, StepWiped}

func (a *Agent) step(name string) {
	if a.cfg.AfterStep != nil {
		a.cfg.AfterStep(name)
	}
}

// rotationError is a failed rotation step with the code the device reports for it.
type rotationError struct {
	code string
	err  error
	// retryAfter is the signer's word on when to ask again (wire.CertResponse RetryAfter);
	// 0 without one.
	retryAfter time.Duration
}

func (e *rotationError) Error() string { return e.code + ": " + e.err.Error() }
func (e *rotationError) Unwrap() error { return e.err }

func rotErr(code string, format string, args ...any) error {
	return &rotationError{code: code, err: fmt.Errorf(format, args...)}
}

// loadCredentials loads the active generation and, if a rotation is under way, the next one.
// After a crash in PhaseIssued the new certificate is presented first: it is the one the
// signer may already have made the only valid one.
func (a *Agent) loadCredentials() error {
	c := a.st.Cred
	act, err := loadGeneration(a.cfg.StateDir, c.Active, a.id.bundle)
	if err == nil && act.cert == nil {
		err = fmt.Errorf("agent: generation %d: no %s", c.Active, certFile)
	}
	if err != nil {
		if act, err = a.lostCredential(c.Active, err); err != nil {
			return err
		}
	}
	a.active = act
	present := act
	switch c.Phase {
	case state.PhasePending, state.PhaseIssued:
		next, err := loadGeneration(a.cfg.StateDir, c.Next, a.id.bundle)
		// A pending generation's damaged token would be registered with its certificate; an
		// issued one's is registered already, and its certificate, which the signer may have
		// made the only valid one, is kept: a renewal after the commit replaces the token.
		if err != nil || (c.Phase == state.PhaseIssued && next.cert == nil) || (c.Phase == state.PhasePending && next.badToken) {
			// The half-made generation is unusable; start that rotation over.
			a.log.Warn("unfinished rotation's credential is unusable; starting it over", "generation", c.Next, "err", err, "token_damaged", next != nil && next.badToken)
			a.st.Cred.Phase, a.st.Cred.Next, a.st.Cred.ReqID = state.PhaseNone, 0, ""
			if err := a.store.Save(a.st); err != nil {
				// A full or failing disk: the journal on disk still names the unusable
				// generation, and the next start gives it up the same way.
				a.log.Error("could not journal the restart of the rotation; going on without it", "err", err)
			}
			break
		}
		a.next = next
		if c.Phase == state.PhaseIssued {
			present = next
			a.rotStatus = wire.RotationIssued
		} else {
			a.rotStatus = wire.RotationPending
		}
	}
	tc, err := certs.TLSCertificate(present.cert, present.key)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	a.holder.Set(tc)
	a.wipeStale()
	return nil
}

// lostCredential stands in for the active generation gen, which could not be loaded (loadErr):
// a file of it is corrupt, truncated or gone. Without a way to get a new certificate, or when
// its key and certificate load but do not match after a re-enrollment (reenrolling), the agent
// cannot run, and the error says why. With the bootstrap identity it runs, holding the
// bootstrap certificate, and its first rotation gets a new generation through that identity:
// refusing to start would leave the camera restarting for good over one damaged file (R6, R7).
func (a *Agent) lostCredential(gen uint64, loadErr error) (*credential, error) {
	fail := fmt.Errorf("agent: active credential (generation %d): %w", gen, loadErr)
	if errors.Is(loadErr, certs.ErrKeyMismatch) && gen == 0 && a.reenrolling() {
		// A re-enrollment killed between its journal and its bundle (restartJournal) left
		// the old bundle beside the new key. Installing the bundle again finishes it; a new
		// generation through the bootstrap identity would wipe the new key at its commit.
		return nil, fmt.Errorf("%w (an enrollment interrupted before its bundle was written? install the bundle again: camagent enroll --bundle FILE)", fail)
	}
	if a.id.bundle.Bootstrap == nil {
		return nil, fail
	}
	bkey, err := certs.LoadKeyFile(filepath.Join(a.cfg.StateDir, BootstrapKey))
	if err != nil {
		return nil, errors.Join(fail, fmt.Errorf("agent: bootstrap key: %w", err))
	}
	if !certs.SamePublicKey(a.id.bundle.Bootstrap, bkey) {
		return nil, errors.Join(fail, fmt.Errorf("agent: bootstrap key: %w", certs.ErrKeyMismatch))
	}
	a.log.Error("the active credential cannot be loaded; getting a new one through the bootstrap identity", "generation", gen, "err", loadErr)
	return &credential{gen: gen, key: bkey, cert: a.id.bundle.Bootstrap, lost: true}, nil
}

// reenrolling reports whether the enrollment key does not match the bundle's certificate
// because an enrollment made since is waiting for its bundle. Only when the last enrollment
// request (CSRFile) carries the certificate's key, the enrollment the bundle answers, is the
// key file what changed since, and a storage fault (a bit flipped in a key that still
// loads): Enroll writes the request of every key it makes. Without a readable request the
// agent cannot tell, and takes it for a re-enrollment, as it always did.
func (a *Agent) reenrolling() bool {
	b, err := cappedfile.Read(filepath.Join(a.cfg.StateDir, CSRFile), 2*certs.MaxCSRSize)
	if err != nil {
		return true
	}
	csr, err := certs.ParseCSR(b)
	if err != nil {
		return true
	}
	pub, ok := a.id.bundle.Cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	return !ok || !pub.Equal(csr.PublicKey)
}

// enrollmentWaiting reports whether the enrollment key (KeyFile), on a device whose journal
// names another generation, is one `camagent enroll` made for an enrollment still waiting for
// its bundle: a key the installed bundle's certificate does not carry. On a device that
// rotated, generation 0 is otherwise stale, and wiping it left the request the operator took
// to fleetctl answerable by no key here: the bundle could not be installed. The request file
// (CSRFile) is not asked, so that a fault in it cannot cost the key; the one key that must go,
// the installed certificate's (a wipe killed half-way), is told apart by the certificate.
func (a *Agent) enrollmentWaiting() bool {
	key, err := certs.LoadKeyFile(filepath.Join(a.cfg.StateDir, KeyFile))
	return err == nil && !certs.SamePublicKey(a.id.bundle.Cert, key)
}

// wipeStale removes generations the journal no longer names: the old generation of a rotation
// that committed just before a crash, and abandoned attempts.
func (a *Agent) wipeStale() {
	keep := map[uint64]bool{a.st.Cred.Active: true}
	if a.st.Cred.Phase != state.PhaseNone {
		keep[a.st.Cred.Next] = true
	}
	stale := []uint64{}
	if !keep[0] && a.enrollmentWaiting() {
		keep[0] = true
		a.log.Warn("an enrollment key other than the installed bundle's is kept: an enrollment waits for its bundle; install it with camagent enroll --bundle FILE", "key", KeyFile)
	}
	if !keep[0] {
		// Either file: a wipe killed between the key and the token leaves the token alone.
		for _, name := range []string{KeyFile, TokenFile} {
			if _, err := os.Stat(filepath.Join(a.cfg.StateDir, name)); err == nil {
				stale = append(stale, 0)
				break
			}
		}
	}
	ents, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, credsDir))
	for _, e := range ents {
		if g, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && !keep[g] {
			stale = append(stale, g)
		}
	}
	for _, g := range stale {
		if err := wipeGeneration(a.cfg.StateDir, g); err != nil {
			a.log.Error("could not wipe a stale credential", "generation", g, "err", err)
			continue
		}
		a.log.Info("wiped stale credential", "generation", g)
	}
}

// recoverCred rebuilds the credential journal from the generations on disk whose key and
// certificate load and chain to the fleet CA, after state.json was lost, found corrupt, or
// named a generation that is not there. One becomes the active generation. Of two or more,
// the newest two are journaled as a rotation whose certificate arrived (PhaseIssued, with a
// new request id): the newest is tried first and the one before it is the fallback, as after
// a rotation killed in that phase. Which one works is the broker's word, not this device's
// clock: the newest may have expired while the device was off (it is given up for the older
// one, and a new rotation follows), or be the only one the signer left unrevoked (the older is
// wiped at the commit). Taking the newest alone wiped the older as stale, the only working
// credential of a device without a bootstrap identity when the newest had expired.
func (a *Agent) recoverCred() state.Cred {
	gens := []uint64{0}
	ents, _ := os.ReadDir(filepath.Join(a.cfg.StateDir, credsDir))
	for _, e := range ents {
		if g, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && g > 0 {
			gens = append(gens, g)
		}
	}
	slices.Sort(gens)
	var usable []uint64 // newest first
	for i := len(gens) - 1; i >= 0 && len(usable) < 2; i-- {
		c, err := loadGeneration(a.cfg.StateDir, gens[i], a.id.bundle)
		if err != nil || c.cert == nil {
			continue
		}
		usable = append(usable, gens[i])
	}
	// The epoch is unknown; 0 makes the device rotate again if the fleet wants more, which is
	// always safe.
	switch len(usable) {
	case 0:
		return state.Cred{}
	case 1:
		return state.Cred{Active: usable[0]}
	}
	var rid [8]byte
	rand.Read(rid[:])
	return state.Cred{Active: usable[1], Phase: state.PhaseIssued, Next: usable[0], ReqID: hex.EncodeToString(rid[:])}
}

// journalOrphaned reports whether st names an active generation of which nothing is on disk:
// no write of the agent leaves that (a commit names a generation whose files exist, and wipes
// only others), so a storage fault changed the number, or lost the directory.
func journalOrphaned(stateDir string, st state.State) bool {
	if st.Cred.Active == 0 {
		return false // the enrollment's, whose files are outside creds/
	}
	_, err := os.Lstat(genDir(stateDir, st.Cred.Active))
	return errors.Is(err, fs.ErrNotExist)
}

func (a *Agent) activeCred() *credential {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.active
}

// poke wakes the reconcile loop.
func (a *Agent) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// refusedCredential reports whether a connect error means the broker refused this device's
// certificate (rather than the network failing): a TLS alert about the certificate, or an MQTT
// CONNACK refusal.
func refusedCredential(err error) bool {
	var ae tls.AlertError
	if errors.As(err, &ae) {
		switch ae {
		case 42, 43, 44, 45, 46, 48, 49: // bad/unsupported/revoked/expired/unknown certificate, unknown CA, access denied (RFC 8446 §6.2)
			return true
		}
	}
	s := err.Error()
	return strings.Contains(s, "not Authorized") || strings.Contains(s, "bad user name or password") ||
		strings.Contains(s, "certificate revoked") || strings.Contains(s, "bad certificate") || strings.Contains(s, "expired certificate")
}

// renewAt is when the active certificate should be renewed: at two thirds of its lifetime,
// moved by up to ±RenewJitter of the lifetime, by an amount fixed per certificate so that a
// fleet enrolled at once spreads its renewals.
func (a *Agent) renewAt(c *credential) time.Time {
	life := c.cert.NotAfter.Sub(c.cert.NotBefore)
	h := fnv.New64a()
	h.Write(c.cert.Raw)
	frac := float64(h.Sum64()%10001)/10000*2 - 1 // [-1, 1]
	return c.cert.NotBefore.Add(life*2/3 + time.Duration(frac*a.cfg.RenewJitter*float64(life)))
}

// needs reports whether a rotation is under way or due, and why.
func (a *Agent) needs() (bool, string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, act, now := a.st.Cred, a.active, a.clk.Now()
	switch {
	case c.Phase != state.PhaseNone:
		return true, "resuming " + c.Phase + " rotation"
	case act.lost:
		return true, "the active credential cannot be loaded"
	case act.badToken:
		return true, "the device token is damaged"
	case a.st.DesiredEpoch > c.Epoch:
		return true, fmt.Sprintf("fleet wants epoch %d, device is at %d", a.st.DesiredEpoch, c.Epoch)
	case !now.Before(act.cert.NotAfter):
		return true, "certificate expired"
	case int(a.authFails.Load()) >= a.cfg.AuthFailuresBeforeBootstrap:
		return true, "broker refuses the certificate"
	case !now.Before(a.renewAt(act)) && !now.Before(a.committed.Add(act.cert.NotAfter.Sub(act.cert.NotBefore)/3)):
		// The second condition: a device clock far ahead of the signer's makes every new
		// certificate look old at once; one renewal per third of a lifetime, by the device's
		// own clock, keeps it from renewing back to back.
		return true, "scheduled renewal"
	}
	return false, ""
}

// reconcile is the credential loop: whenever the desired state, the clock or the broker's
// answers say the credential must change, it runs the rotation to completion, retrying failed
// attempts with jittered backoff. It returns when ctx ends.
func (a *Agent) reconcile(ctx context.Context) {
	var failures int
	for {
		if ok, why := a.needs(); ok && a.canRotate() {
			a.log.Info("rotating credentials", "why", why)
			a.busySince.Store(a.clk.Now().UnixNano())
			err := a.rotate(ctx)
			a.busySince.Store(0)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				code, hint := wire.ErrCodeInternal, time.Duration(0)
				var re *rotationError
				if errors.As(err, &re) {
					code, hint = re.code, re.retryAfter
				}
				var delay time.Duration
				if hint > 0 {
					// The signer said when it will have a place: its pace, not this
					// device's failures, sets the wait (a device paced many times would
					// otherwise wait minutes after the campaign had room for it).
					delay = hintedDelay(hint)
				} else {
					failures++
					delay = a.retryDelay(failures)
				}
				a.setStatus(wire.RotationFailed, code)
				a.log.Warn("rotation step failed; will retry", "err", err, "code", code, "failures", failures, "retry_in", delay.Round(time.Millisecond))
				if err := a.publishState(ctx); err != nil {
					a.log.Debug("could not publish state", "err", err)
				}
				if !a.sleep(ctx, delay) {
					return
				}
				continue
			}
			failures = 0
			a.certV.committed()
			continue
		}
		wait := time.Hour
		if act := a.activeCred(); act != nil {
			if d := a.renewAt(act).Sub(a.clk.Now()); d > 0 && d < wait {
				wait = d
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-a.beat: // Alive: the loop is not wedged; look again
		case <-a.clk.After(wait):
		}
	}
}

// sleep waits out the backoff after a failed attempt. Pokes do not cut it short: every
// reconnect pokes, and a broker that refuses the new certificate would otherwise be retried
// in a tight loop.
func (a *Agent) sleep(ctx context.Context, d time.Duration) bool {
	return a.await(ctx, a.clk.After(d))
}

// maxHint bounds the wait a signer's retry hint can impose on the device.
const maxHint = time.Hour

// hintedDelay is the wait before asking again after the signer's hint h: h, and up to a
// second and a tenth of h more, so that the devices told the same whole second spread.
func hintedDelay(h time.Duration) time.Duration {
	h = min(h, maxHint)
	return h + time.Duration(mrand.Int64N(int64(time.Second+h/10)))
}

// retryDelay is full-jitter exponential backoff between failed rotation attempts.
func (a *Agent) retryDelay(failures int) time.Duration {
	ceil := a.cfg.RetryMin << min(failures-1, 20)
	if ceil > a.cfg.RetryMax || ceil <= 0 {
		ceil = a.cfg.RetryMax
	}
	return a.cfg.RetryMin/2 + time.Duration(mrand.Int64N(int64(ceil)))
}

// canRotate reports whether a rotation step can make progress now: over the live session, or
// through the bootstrap identity, or (for a certificate already issued) by trying it.
func (a *Agent) canRotate() bool {
	a.mu.Lock()
	issued := a.st.Cred.Phase == state.PhaseIssued
	a.mu.Unlock()
	return issued || a.client.Connected() || a.mustBootstrap()
}

// mustBootstrap reports whether the operational certificate cannot be used any more (expired,
// refused by the broker several times in a row, or lost to a damaged file), so the rotation
// must go through the bootstrap identity.
func (a *Agent) mustBootstrap() bool {
	if a.id.bundle.Bootstrap == nil {
		return false
	}
	act := a.activeCred()
	return act.lost || !a.clk.Now().Before(act.cert.NotAfter) || int(a.authFails.Load()) >= a.cfg.AuthFailuresBeforeBootstrap
}

func (a *Agent) setStatus(status, code string) {
	a.mu.Lock()
	a.rotStatus, a.lastError = status, code
	a.mu.Unlock()
}

func (a *Agent) save(mut func(*state.State)) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.st
	mut(&st)
	if st.Equal(a.st) {
		return nil // a.st is what the store holds: nothing to write
	}
	st.TimeFloor = max(st.TimeFloor, a.clk.Now().Unix()) // the write carries the time floor too
	if err := a.store.Save(st); err != nil {
		return err
	}
	a.st = st
	return nil
}

// state returns a copy of the state as last saved.
func (a *Agent) state() state.State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// rotate runs one rotation from wherever the journal stands to committed.
func (a *Agent) rotate(ctx context.Context) error {
	a.mu.Lock()
	phase, next := a.st.Cred.Phase, a.next
	a.mu.Unlock()
	if phase == state.PhaseIssued && !a.clk.Now().Before(next.cert.NotAfter) {
		// Expired by this device's clock, which may have jumped ahead while the broker's is
		// right; and once confirmed (a kill before the commit), the issued certificate is
		// the only one the signer left unrevoked. It is given up only when one more try to
		// connect with it fails too.
		err := a.switchAndCommit(ctx)
		var re *rotationError
		if err == nil || ctx.Err() != nil || !errors.As(err, &re) || re.code != wire.ErrCodeBrokerRefuse {
			return err
		}
		if err := a.abandonIssued(next); err != nil {
			return err
		}
		phase = state.PhaseNone
	}
	if phase == state.PhaseNone {
		if err := a.begin(); err != nil {
			return err
		}
		if err := a.raiseTarget(); err != nil {
			return err
		}
		phase = state.PhasePending
	}
	if phase == state.PhasePending {
		if err := a.request(ctx); err != nil {
			return err
		}
	}
	return a.switchAndCommit(ctx)
}

// abandonIssued gives up an issued certificate that expired before the broker took it (the
// device was off, or the broker kept refusing it, and did not take it once more): retrying it
// can never succeed, and the rotation must ask for a new one instead, through the bootstrap
// identity if the active certificate expired too (R7). The journal goes back to PhaseNone
// first, then the dead generation is wiped (a crash in between leaves it for wipeStale).
func (a *Agent) abandonIssued(next *credential) error {
	a.log.Warn("issued certificate expired before the broker accepted it; asking for a new one",
		"generation", next.gen, "serial", serialHex(next.cert), "not_after", next.cert.NotAfter.UTC().Format(time.RFC3339))
	if err := a.save(func(st *state.State) {
		st.Cred.Phase, st.Cred.Next, st.Cred.ReqID = state.PhaseNone, 0, ""
	}); err != nil {
		return rotErr(wire.ErrCodeInternal, "journal abandon: %w", err)
	}
	a.mu.Lock()
	a.next = nil
	old := a.active
	a.mu.Unlock()
	if serialHex(a.Certificate()) != serialHex(old.cert) {
		// After a restart in PhaseIssued the dead certificate is the one presented.
		oldTLS, err := certs.TLSCertificate(old.cert, old.key)
		if err != nil {
			return rotErr(wire.ErrCodeInternal, "%w", err)
		}
		a.holder.Set(oldTLS)
		a.client.Reconnect()
	}
	if err := wipeGeneration(a.cfg.StateDir, next.gen); err != nil {
		a.log.Error("could not wipe the abandoned credential", "generation", next.gen, "err", err)
	}
	return nil
}

// begin makes the next generation's key and token and journals PhasePending.
func (a *Agent) begin() error {
	a.mu.Lock()
	c := a.st.Cred
	target := max(a.st.DesiredEpoch, c.Epoch)
	a.mu.Unlock()
	gen := max(c.Active, c.Next) + 1
	key, _, err := makeGeneration(a.cfg.StateDir, gen)
	if err != nil {
		return rotErr(wire.ErrCodeInternal, "make generation %d: %w", gen, err)
	}
	var rid [8]byte
	rand.Read(rid[:])
	if err := a.save(func(st *state.State) {
		st.Cred.Phase, st.Cred.Next, st.Cred.TargetEpoch, st.Cred.ReqID = state.PhasePending, gen, target, hex.EncodeToString(rid[:])
		st.Cred.Bootstrap = false
	}); err != nil {
		return rotErr(wire.ErrCodeInternal, "journal pending: %w", err)
	}
	a.mu.Lock()
	a.next = &credential{gen: gen, key: key}
	a.rotStatus, a.lastError = wire.RotationPending, ""
	a.mu.Unlock()
	a.log.Info("rotation pending: new key made", "generation", gen, "target_epoch", target)
	a.step(StepPending)
	return nil
}

// request gets the pending request's certificate — an answer that came after the last
// attempt stopped waiting, or else a new answer from the signer (askSigner) — verifies it and
// journals PhaseIssued.
// raiseTarget makes a rotation begin just made, whose request has not been sent, ask for the
// desired epoch if one higher came meanwhile: a device back after several breaches gets their
// notices one after another, and would otherwise rotate once for each. Only here is the
// request known unsent: a journaled request id may have reached the signer before a restart,
// and the signer answers a repeated id with the certificate of its first epoch.
func (a *Agent) raiseTarget() error {
	a.mu.Lock()
	target, desired := a.st.Cred.TargetEpoch, a.st.DesiredEpoch
	a.mu.Unlock()
	if desired <= target {
		return nil
	}
	if err := a.save(func(st *state.State) { st.Cred.TargetEpoch = max(st.Cred.TargetEpoch, st.DesiredEpoch) }); err != nil {
		return rotErr(wire.ErrCodeInternal, "journal pending: %w", err)
	}
	a.log.Info("rotation pending: a newer desired epoch came before the request", "target_epoch", desired)
	return nil
}

func (a *Agent) request(ctx context.Context) error {
	a.mu.Lock()
	c, next := a.st.Cred, a.next
	a.mu.Unlock()
	resp := a.lateAnswer(c.ReqID)
	if resp == nil {
		var err error
		if resp, err = a.askSigner(ctx, c, next); err != nil {
			return err
		}
	} else {
		a.log.Info("rotation: using the signer's answer that came after the last attempt stopped waiting", "req_id", c.ReqID)
	}
	if resp.Error != "" {
		return &rotationError{code: resp.Error, err: errors.New("signer refused the request"), retryAfter: time.Duration(resp.RetryAfter) * time.Second}
	}
	cert, err := certs.ParseCertPEM([]byte(resp.Cert))
	if err != nil {
		return rotErr(wire.ErrCodeBadCert, "%w", err)
	}
	if err := a.checkIssued(cert, next); err != nil {
		return rotErr(wire.ErrCodeBadCert, "%w", err)
	}
	if err := writeCert(a.cfg.StateDir, next.gen, cert); err != nil {
		return rotErr(wire.ErrCodeInternal, "%w", err)
	}
	if err := a.save(func(st *state.State) { st.Cred.Phase = state.PhaseIssued }); err != nil {
		return rotErr(wire.ErrCodeInternal, "journal issued: %w", err)
	}
	a.mu.Lock()
	a.next = &credential{gen: next.gen, key: next.key, cert: cert}
	a.rotStatus = wire.RotationIssued
	a.mu.Unlock()
	a.log.Info("rotation issued: certificate verified", "generation", next.gen, "serial", serialHex(cert), "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	a.step(StepIssued)
	return nil
}

// lateAnswer returns a certificate the signer sent for reqID after the attempt that asked for
// it stopped waiting (a busy signer can answer after the agent's RequestTimeout), and drops
// every other answer waiting in the queue. The journal still holds the request and its key,
// so that certificate is as good as a new answer, and asking again would cost the signer and
// the broker another round.
func (a *Agent) lateAnswer(reqID string) *wire.CertResponse {
	var late *wire.CertResponse
	for len(a.certResp) > 0 {
		if r := <-a.certResp; late == nil && r.ReqID == reqID && r.Error == "" && r.Cert != "" {
			late = r
		}
	}
	return late
}

// askSigner sends the CSR and token hash of the pending request c for next's key and waits
// up to RequestTimeout for the signer's answer. It goes through the bootstrap identity when
// the operational certificate cannot be used.
func (a *Agent) askSigner(ctx context.Context, c state.Cred, next *credential) (*wire.CertResponse, error) {
	id := a.DeviceID()
	csr, err := certs.NewCSR(next.key, id)
	if err != nil {
		return nil, rotErr(wire.ErrCodeInternal, "csr: %w", err)
	}
	th, err := tokenHash(a.cfg.StateDir, next.gen)
	if err != nil {
		return nil, rotErr(wire.ErrCodeInternal, "%w", err)
	}
	v := a.certV.next()
	req, err := wire.Encode(&wire.CertRequest{V: v, Kind: wire.KindRequest, ReqID: c.ReqID, Epoch: c.TargetEpoch, CSR: string(csr), TokenHash: hex.EncodeToString(th[:])})
	if err != nil {
		return nil, rotErr(wire.ErrCodeInternal, "%w", err)
	}
	// The wait ends RequestTimeout after the request was last sent, and at the latest
	// maxRequestWaits RequestTimeouts after it was first: a link that keeps dropping must not
	// keep the attempt going past what Alive allows one (maxBusy).
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.AfterFunc(a.cfg.RequestTimeout, cancel)
	defer deadline.Stop()
	waitEnd := time.Now().Add(maxRequestWaits * a.cfg.RequestTimeout)
	bootstrap := a.mustBootstrap()
	client := a.client
	var conns uint64 // the client's connections before the request was sent
	unsent := false  // the request could not be sent: the connection was down
	if bootstrap {
		a.log.Warn("operational certificate unusable; asking for a new one through the bootstrap identity", "not_after", a.activeCred().cert.NotAfter.UTC().Format(time.RFC3339))
		if err := a.save(func(st *state.State) { st.Cred.Bootstrap = true }); err != nil {
			return nil, rotErr(wire.ErrCodeInternal, "journal: %w", err)
		}
		bs, err := a.bootstrapSession(rctx)
		if err != nil {
			return nil, err
		}
		defer bs.stop()
		client, conns = bs.client, bs.client.Stats().Connects
		if err := bs.publish(rctx, topic.BootCSR(id), req); err != nil {
			return nil, rotErr(wire.ErrCodeTimeout, "send bootstrap csr: %w", err)
		}
	} else {
		conns = client.Stats().Connects
		if err := a.publishRaw(rctx, topic.CSR(id), 1, req); err != nil {
			if !errors.Is(err, mqtt.ErrNotConnected) && !errors.Is(err, mqtt.ErrConnectionLost) {
				return nil, rotErr(wire.ErrCodeTimeout, "send csr: %w", err)
			}
			// Offline (a broker restart): sent as soon as the connection is back, below,
			// rather than after the rotation's backoff.
			unsent = true
			a.log.Info("not connected; the certificate request goes out when the connection is back", "req_id", c.ReqID)
		}
	}
	a.step(StepRequested)
	// A signer that takes a while (busy, or not running) leaves the rotation waiting: the
	// device says so, once, so that fleetctl status counts it rotating rather than behind. A
	// quick answer adds no publish to the rotation's own at its end. Through the bootstrap
	// identity the operational connection is not up to say it.
	var notice <-chan time.Time
	var reconnected <-chan string
	if !bootstrap {
		notice = a.clk.After(pendingNoticeAfter)
		reconnected = a.connEv
	}
	for {
		select {
		case <-rctx.Done():
			// Only a request sent and waited for on one connection that stayed up says
			// anything about the signer's version: one whose connection dropped may have
			// been lost with it, or its answer (a broker restart loses thousands).
			if ctx.Err() == nil && !unsent && client.Connected() && client.Stats().Connects == conns && a.certV.unanswered(v) {
				a.log.Info("no answer from the signer; asking in the other version of the request next", "version", v, "next_version", a.certV.next())
			}
			if ctx.Err() == nil && !bootstrap && !client.Connected() {
				// Most likely not the signer's doing: say so to whoever reads the log.
				return nil, rotErr(wire.ErrCodeTimeout, "no certificate from the signer within %s, and not connected now: the request goes out again once the connection is back", a.cfg.RequestTimeout)
			}
			return nil, rotErr(wire.ErrCodeTimeout, "no certificate from the signer within %s", a.cfg.RequestTimeout)
		case <-notice:
			notice = nil
			if err := a.publishState(rctx); err != nil && rctx.Err() == nil {
				a.log.Debug("could not publish that the rotation waits for the signer", "err", err)
			}
		case <-reconnected:
			// The request, or the signer's answer, may have been lost with the connection
			// that ended (a broker restart loses both), or the request could not be sent: it
			// is sent (again) at once, with the same req_id, and waited for afresh, rather
			// than waited out. A signer answers a request it decided before with the
			// certificate it issued for it, and holds one copy of a request it is holding.
			if !unsent && client.Stats().Connects == conns {
				continue
			}
			if left := time.Until(waitEnd); left <= 0 || !deadline.Reset(min(a.cfg.RequestTimeout, left)) {
				continue
			}
			conns = client.Stats().Connects
			if err := a.publishRaw(rctx, topic.CSR(id), 1, req); err != nil {
				a.log.Debug("could not send the certificate request after reconnecting", "req_id", c.ReqID, "err", err)
				continue
			}
			unsent = false
			a.log.Info("reconnected while waiting for the signer; certificate request sent", "req_id", c.ReqID)
		case r := <-a.certResp:
			if r.ReqID == c.ReqID {
				a.certV.answered(r.V)
				return r, nil
			}
		}
	}
}

// maxRequestWaits bounds one rotation attempt's wait for the signer, in RequestTimeouts, however
// often the request is sent again after a reconnection.
const maxRequestWaits = 2

// certVersion chooses the version of the next certificate request: wire.CertVersion, whose
// answers may carry the signer's retry hint, unless requests in it go unanswered. A signer
// holds a request it has no place for at most 25 s, less than RequestTimeout, then answers;
// a signer from before version 2 drops a version 2 request as malformed. So a request that
// went unanswered is asked next in the other version; once a signer answered in version 2,
// only after three in a row (under load answers are lost or late, and each switch to version
// 1 gives up the hints; a signer rolled back to an old version is still reached). Its zero
// value asks in wire.CertVersion.
type certVersion struct {
	v      int  // the version of the next request; 0 for wire.CertVersion
	missed int  // requests in v in a row that went unanswered
	seen2  bool // a signer answered in wire.CertVersion since the agent started
}

func (c *certVersion) next() int {
	if c.v == 0 {
		return wire.CertVersion
	}
	return c.v
}

// answered records an answer, in version v, to a request.
func (c *certVersion) answered(v int) {
	c.missed = 0
	if v == wire.CertVersion {
		c.seen2 = true
	}
}

// unanswered records that a request in version v went unanswered, and reports whether the
// next one goes in the other version.
func (c *certVersion) unanswered(v int) bool {
	if v != c.next() {
		return false
	}
	c.missed++
	limit := 1
	if c.seen2 {
		limit = 3
	}
	if c.missed < limit {
		return false
	}
	c.v, c.missed = wire.Version+wire.CertVersion-v, 0
	return true
}

// committed starts the next rotation in wire.CertVersion again: the signers may have been
// upgraded meanwhile.
func (c *certVersion) committed() { c.v, c.missed = 0, 0 }

// pendingNoticeAfter is how long a rotation waits for the signer's answer before the device
// publishes its state (rotation "pending").
const pendingNoticeAfter = 3 * time.Second

// maxIssuedLifetime bounds the validity of a certificate the agent accepts from the signer.
const maxIssuedLifetime = 400 * 24 * time.Hour

// checkIssued verifies a certificate from the signer: it chains to the pinned fleet CA with
// the clientAuth EKU, names this device, carries the pending key, and has a sane validity.
func (a *Agent) checkIssued(c *x509.Certificate, next *credential) error {
	// A certificate valid from a little later than this device's clock (within ClockSkew) is
	// accepted, but its chain is always verified: at its own NotBefore in that case.
	now := a.clk.Now()
	at := now
	if c.NotBefore.After(now) {
		if c.NotBefore.After(now.Add(certs.ClockSkew)) {
			return fmt.Errorf("%w: issued certificate valid from %s, device clock %s", certs.ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		at = c.NotBefore
	}
	if _, err := certs.VerifyClient(c, a.id.bundle.Pool, at); err != nil {
		return err
	}
	if id := certs.CertIdentity(c); id != a.DeviceID() {
		return fmt.Errorf("%w: issued for %q", certs.ErrBadIdentity, id)
	}
	if !certs.SamePublicKey(c, next.key) {
		return fmt.Errorf("issued certificate: %w", certs.ErrKeyMismatch)
	}
	if c.NotAfter.Sub(c.NotBefore) > maxIssuedLifetime {
		return fmt.Errorf("issued certificate valid for %s, over %s", c.NotAfter.Sub(c.NotBefore), maxIssuedLifetime)
	}
	return nil
}

// switchAndCommit presents the new certificate, reconnects, confirms to the signer and
// commits. If the broker does not accept the new certificate within SwitchTimeout, the old one
// is presented again and the rotation stays in PhaseIssued to be retried.
func (a *Agent) switchAndCommit(ctx context.Context) error {
	a.mu.Lock()
	next, old, c := a.next, a.active, a.st.Cred
	a.mu.Unlock()
	newTLS, err := certs.TLSCertificate(next.cert, next.key)
	if err != nil {
		return rotErr(wire.ErrCodeInternal, "%w", err)
	}
	newSerial := serialHex(next.cert)
	if serialHex(a.Certificate()) != newSerial || !a.client.Connected() {
		for len(a.connEv) > 0 {
			<-a.connEv
		}
		a.holder.Set(newTLS)
		a.client.Reconnect()
		if !a.awaitConnection(ctx, newSerial) {
			oldTLS, _ := certs.TLSCertificate(old.cert, old.key)
			a.holder.Set(oldTLS)
			a.client.Reconnect()
			return rotErr(wire.ErrCodeBrokerRefuse, "broker did not accept certificate %s within %s; back on %s", newSerial, a.cfg.SwitchTimeout, serialHex(old.cert))
		}
	}
	a.step(StepSwitched)
	confirm, err := wire.Encode(&wire.CertRequest{V: wire.Version, Kind: wire.KindConfirm, ReqID: c.ReqID, Epoch: c.TargetEpoch, NewSerial: newSerial, OldSerial: serialHex(old.cert)})
	if err != nil {
		return rotErr(wire.ErrCodeInternal, "%w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, a.cfg.RequestTimeout)
	err = a.publishRaw(cctx, topic.CSR(a.DeviceID()), 1, confirm)
	cancel()
	if err != nil {
		return rotErr(wire.ErrCodeTimeout, "send confirmation: %w", err)
	}
	a.step(StepConfirmed)
	// Commit: one atomic write makes the new generation the active one.
	var epoch uint64
	if err := a.save(func(st *state.State) {
		st.Cred = state.Cred{Active: next.gen, Epoch: max(st.Cred.Epoch, c.TargetEpoch)}
		epoch = st.Cred.Epoch
	}); err != nil {
		return rotErr(wire.ErrCodeInternal, "journal commit: %w", err)
	}
	a.mu.Lock()
	a.active, a.next = next, nil
	a.rotStatus, a.lastError = wire.RotationIdle, ""
	a.committed = a.clk.Now()
	a.mu.Unlock()
	a.authFails.Store(0)
	a.step(StepCommitted)
	if err := wipeGeneration(a.cfg.StateDir, old.gen); err != nil {
		a.log.Error("could not wipe the old credential", "generation", old.gen, "err", err)
	}
	a.step(StepWiped)
	a.rotations.Add(1)
	a.log.Info("rotation committed", "generation", next.gen, "serial", newSerial, "old_serial", serialHex(old.cert), "epoch", epoch)
	a.mu.Lock()
	committed := slices.Clone(a.commitHook)
	a.mu.Unlock()
	for _, h := range committed {
		h(epoch)
	}
	// Normally the desired state that asked for this epoch raised the grant epoch already.
	a.raiseGrantEpoch()
	if err := a.publishState(ctx); err != nil {
		a.log.Warn("could not publish state", "err", err)
	}
	return nil
}

// awaitConnection waits until the MQTT session is up with the certificate of serial.
func (a *Agent) awaitConnection(ctx context.Context, serial string) bool {
	deadline := a.clk.After(a.cfg.SwitchTimeout)
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			return false
		case s := <-a.connEv:
			if s == serial {
				return true
			}
		}
	}
}

// publishRaw publishes an already encoded message, not retained.
func (a *Agent) publishRaw(ctx context.Context, t string, qos byte, b []byte) error {
	box := a.pub.Load()
	if box == nil {
		return fmt.Errorf("agent: publish %s: not running", t)
	}
	return box.Publish(ctx, t, qos, false, b)
}

// handleCertResponse passes a signer answer to the waiting rotation.
func (a *Agent) handleCertResponse(payload []byte) {
	var r wire.CertResponse
	if err := wire.Decode(payload, &r); err != nil {
		a.log.Warn("malformed certificate response", "err", err)
		return
	}
	select {
	case a.certResp <- &r:
	default:
		a.log.Warn("certificate response dropped: nobody waiting", "req_id", r.ReqID)
	}
}

// bootSession is a short-lived MQTT session as the bootstrap identity.
type bootSession struct {
	client *mqtt.Client
	pub    Publisher // client behind the egress guard, like every other publish
	cancel context.CancelFunc
	done   chan error
}

func (b *bootSession) publish(ctx context.Context, t string, p []byte) error {
	return b.pub.Publish(ctx, t, 1, false, p)
}

// bootstrapSession connects as bootstrap:<id>, whose ACL allows nothing but asking for a new
// certificate, and routes the signer's answers to the waiting rotation. Call the returned
// session's stop when done.
func (a *Agent) bootstrapSession(ctx context.Context) (*bootSession, error) {
	bkey, err := certs.LoadKeyFile(filepath.Join(a.cfg.StateDir, BootstrapKey))
	if err != nil {
		return nil, rotErr(wire.ErrCodeInternal, "bootstrap key: %w", err)
	}
	btls, err := certs.TLSCertificate(a.id.bundle.Bootstrap, bkey)
	if err != nil {
		return nil, rotErr(wire.ErrCodeInternal, "bootstrap: %w", err)
	}
	broker, fallbacks, err := a.brokerURLs()
	if err != nil {
		return nil, rotErr(wire.ErrCodeInternal, "bootstrap: %w", err)
	}
	conf := certs.ClientTLSConfig(a.id.bundle.Pool, "", certs.NewHolder(btls))
	conf.Time = a.clk.Now
	conf.VerifyConnection = a.brokers.VerifyConnection
	id := a.DeviceID()
	bid, _ := certs.IdentityFor(certs.RoleBootstrap, id)
	client, err := mqtt.New(mqtt.Config{
		BrokerURL:          broker,
		FallbackBrokerURLs: fallbacks,
		ClientID:           bid,
		TLS:                conf,
		CleanSession:       true,
		Subscriptions:      []mqtt.Subscription{{Filter: topic.BootCert(id), QoS: 1}},
		Handler: func(_ context.Context, m mqtt.Message) {
			if m.Topic == topic.BootCert(id) {
				a.handleCertResponse(m.Payload)
			}
		},
		// The broker that takes the bootstrap identity's connection proves a disputed
		// bundle's address as well as one that takes the device's own: the device's
		// certificate may be what keeps Run's client out.
		OnConnect:  a.brokerProven,
		MinBackoff: a.cfg.MinBackoff,
		MaxBackoff: a.cfg.MaxBackoff,
		LocalAddr:  a.cfg.LocalAddr,
		Logger:     a.log.With("identity", bid),
	})
	if err != nil {
		return nil, rotErr(wire.ErrCodeInternal, "bootstrap: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	bs := &bootSession{client: client, pub: egress.Wrap(client, a.guard), cancel: cancel, done: make(chan error, 1)}
	a.bootc.Store(client)
	if won := a.brokerWon.Load(); won != nil {
		client.DialOnly(*won) // settled between brokerURLs and the Store
	}
	go func() {
		err := client.Run(runCtx)
		a.bootc.CompareAndSwap(client, nil)
		bs.done <- err
	}()
	if err := client.WaitConnected(ctx); err != nil {
		bs.stop()
		return nil, rotErr(wire.ErrCodeTimeout, "bootstrap connect: %w", err)
	}
	return bs, nil
}

func (b *bootSession) stop() {
	b.cancel()
	<-b.done
}
