package signer

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/fleetctl/registry"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// decide decides a batch of requests in one registry transaction and returns the answers to
// publish. Answers are only returned once the transaction is durable: a certificate that is
// not in the registry is never handed out. When the transaction fails every request of the
// batch is answered wire.ErrCodeInternal and the devices retry.
//
// Confirmations are decided first, since they free places in the window of
// Config.MaxPending; requests that would need a new certificate while the window is full are
// returned as deferred, in their order, to be held and decided again. full reports that the
// window had no room left.
func (s *Signer) decide(batch []request) (answers []answer, deferred []request, full bool) {
	now := s.clk.Now()
	var t tally
	err := s.reg.Update(func(tx *registry.Tx) error {
		answers, deferred, full = answers[:0], deferred[:0], false
		st, err := LoadRollout(s.cfg.RolloutPath)
		if err != nil {
			// Fail closed: without the rollout state the signer cannot know it may issue.
			s.log.Error("signer: cannot read the rollout state; refusing new certificates", "err", err)
			st = RolloutState{Aborted: true, Reason: "rollout state unreadable"}
		}
		s.bucket.sync(tx)
		revoked := 0
		for i := range batch {
			r := &batch[i]
			if r.msg.Kind != wire.KindConfirm {
				continue
			}
			n, err := s.confirm(tx, r, now, &t)
			if err != nil {
				return err
			}
			revoked += n
		}
		// The abort check walks every certificate issued in the abort window: it is made once
		// a batch, when a request first needs it (held requests are decided again batch after
		// batch). Within a batch its answer cannot turn: the batch's certificates count as
		// pending, not failed.
		checked, aborted := false, false
		abort := func() bool {
			if !checked {
				checked, aborted = true, s.checkAbort(tx, &st, now)
			}
			return aborted
		}
		room := -1 // no cap
		if s.cfg.MaxPending > 0 {
			room = max(0, s.cfg.MaxPending-tx.Outcomes(now.Add(-s.cfg.PendingTimeout), now, s.cfg.PendingTimeout).Pending)
		}
		for i := range batch {
			r := &batch[i]
			if r.msg.Kind != wire.KindRequest {
				continue
			}
			a, issued, err := s.request(tx, r, &st, abort, now, &t, room != 0)
			switch {
			case err != nil:
				return err
			case a == nil:
				deferred = append(deferred, *r)
			default:
				answers = append(answers, *a)
				if issued && room > 0 {
					room--
				}
			}
		}
		full = room == 0
		if revoked > 0 && s.cfg.CRLPath != "" {
			tx.AfterCommit(s.crlDirty)
		}
		return nil
	})
	if err == nil {
		t.add(s)
		s.pace.issued(now, int(t.issued))
		return answers, deferred, full
	}
	s.log.Error("signer: registry transaction failed; answering the batch with an internal error", "requests", len(batch), "err", err)
	// The issuances of the failed transaction were not recorded and are not handed out;
	// the bucket took them into account, so it replays the registry from the start.
	s.bucket = newBucket(s.cfg.MaxRate, s.cfg.Burst)
	answers = answers[:0]
	for _, r := range batch {
		if r.msg.Kind == wire.KindRequest {
			s.stats.refused.Add(1)
			a := answerTo(&r)
			a.resp.Error = wire.ErrCodeInternal
			answers = append(answers, a)
		}
	}
	return answers, nil, false
}

func replyTopic(r request) string {
	if r.via == registry.ViaBoot {
		return topic.BootCert(r.device)
	}
	return topic.Cert(r.device)
}

// request decides one certificate request: it returns the answer and whether it is a new
// certificate, or a nil answer when a new certificate is due and mayIssue is false (the window
// is full: the request is held). An error aborts the whole transaction.
func (s *Signer) request(tx *registry.Tx, r *request, st *RolloutState, aborted func() bool, now time.Time, t *tally, mayIssue bool) (*answer, bool, error) {
	a := answerTo(r)
	refuse := func(code, why string, args ...any) (*answer, bool, error) {
		if code == wire.ErrCodeRateLimited {
			t.rateLimited++
			a = s.rateLimited(r, now)
			s.log.Info("signer: request paced by the rate limit; the device will retry", "device", r.device, "via", r.via, "req_id", r.msg.ReqID, "retry_after_s", a.resp.RetryAfter)
			return &a, false, nil
		}
		a.resp.Error = code
		t.refused++
		s.log.Warn("signer: certificate request refused: "+why, append([]any{"device", r.device, "via", r.via, "req_id", r.msg.ReqID, "code", code}, args...)...)
		return &a, false, nil
	}
	if r.csrErr != nil {
		return refuse(wire.ErrCodeRefused, "malformed csr", "err", r.csrErr)
	}
	// The broker's ACL lets only <id> (or bootstrap:<id>) publish on this topic, so the CSR
	// must ask for exactly <id>: anything else is a device asking for another's identity.
	if cn := r.csr.Subject.CommonName; cn != r.device {
		return refuse(wire.ErrCodeRefused, "the csr names another identity", "csr_identity", clip(cn))
	}
	if since, retired := tx.Retired(r.device); retired {
		// Through either identity: a retired camera that still holds its factory bootstrap
		// identity must not get back into the fleet with it.
		return refuse(wire.ErrCodeRefused, "the device was retired (fleetctl retire)", "retired", since.UTC().Format(time.RFC3339))
	}
	if r.via == registry.ViaBoot && !tx.Known(r.device) {
		return refuse(wire.ErrCodeRefused, "bootstrap request for a device that was never enrolled")
	}
	prev, prevCert, found, err := tx.FindRequest(r.device, r.msg.ReqID)
	if err != nil {
		return nil, false, err
	}
	if found && !prev.IsRevoked() && samePublicKey(prevCert, r.csr) && now.Before(prevCert.NotAfter) {
		t.reissued++
		s.log.Info("signer: retried request answered with the certificate issued before", "device", r.device, "via", r.via, "req_id", r.msg.ReqID, "serial", prev.Serial)
		a.resp.Cert = string(certs.EncodeCertPEM(prevCert))
		return &a, false, nil
	}
	if aborted() {
		return refuse(wire.ErrCodeRefused, "the rollout is aborted; run fleetctl rollout resume", "reason", st.Reason)
	}
	if !s.bucket.allow(now) {
		return refuse(wire.ErrCodeRateLimited, "")
	}
	if !mayIssue {
		return nil, false, nil
	}
	// The CSR's self-signature was checked when it was parsed (certs.ParseCSR, outside the
	// registry lock) and its name above: the CA is given the key alone, not the CSR to check
	// once more.
	c, err := s.cfg.CA.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: r.device, PublicKey: r.csr.PublicKey, Now: now, Validity: s.cfg.Validity})
	if err != nil {
		return refuse(wire.ErrCodeRefused, "the CA would not issue it", "err", err)
	}
	rec, err := registry.IssuedRecord(c, r.device, r.via, r.msg.Epoch, r.msg.TokenHash, r.msg.ReqID, now)
	if err != nil {
		return nil, false, err
	}
	if err := tx.Append(rec); err != nil {
		return nil, false, err
	}
	s.bucket.sync(tx)
	s.pace.served(r.device)
	t.issued++
	s.log.Info("signer: certificate issued", "device", r.device, "via", r.via, "req_id", r.msg.ReqID, "serial", rec.Serial, "epoch", r.msg.Epoch, "not_after", c.NotAfter.UTC().Format(time.RFC3339))
	a.resp.Cert = string(certs.EncodeCertPEM(c))
	return &a, true, nil
}

func samePublicKey(c *x509.Certificate, csr *x509.CertificateRequest) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := c.PublicKey.(equaler)
	return ok && pub.Equal(csr.PublicKey)
}

// confirm handles a device's confirmation that it is connected with NewSerial: that
// certificate is recorded as confirmed and every earlier unrevoked device certificate of the
// device is revoked. It returns how many serials it revoked.
func (s *Signer) confirm(tx *registry.Tx, r *request, now time.Time, t *tally) (int, error) {
	m := &r.msg
	ignore := func(level func(string, ...any), why string) (int, error) {
		t.ignored++
		level("signer: confirmation ignored: "+why, "device", r.device, "via", r.via, "req_id", m.ReqID, "new_serial", m.NewSerial)
		return 0, nil
	}
	if r.via == registry.ViaBoot {
		// The bootstrap identity may ask for a certificate, never make the signer revoke one.
		return ignore(s.log.Warn, "sent through the bootstrap identity")
	}
	nc, ok := tx.Cert(m.NewSerial)
	switch {
	case !ok || nc.Device != r.device || nc.Role != certs.RoleDevice:
		return ignore(s.log.Warn, "the certificate was not issued to this device")
	case nc.IsRevoked():
		return ignore(s.log.Info, "the certificate was revoked since (a late or duplicate confirmation)")
	}
	if !nc.IsConfirmed() {
		if err := tx.Append(registry.Record{Type: registry.TypeConfirmed, Serial: nc.Serial, Device: r.device, ReqID: m.ReqID, Time: now.UTC()}); err != nil {
			return 0, err
		}
		t.confirmed++
	}
	revoked, oldKnown := 0, false
	for _, c := range tx.DeviceCerts(r.device) {
		if c.Serial == nc.Serial {
			break // only earlier certificates: a later one belongs to a later rotation
		}
		oldKnown = oldKnown || c.Serial == m.OldSerial
		if c.Role != certs.RoleDevice || c.IsRevoked() {
			continue
		}
		if err := tx.Append(registry.Record{Type: registry.TypeRevoked, Serial: c.Serial, Device: r.device, Time: now.UTC()}); err != nil {
			return 0, err
		}
		revoked++
		t.revoked++
		s.log.Info("signer: certificate revoked", "device", r.device, "serial", c.Serial, "replaced_by", nc.Serial)
	}
	if !oldKnown && m.OldSerial != nc.Serial {
		s.log.Warn("signer: the confirmation's old serial is not in the registry; it cannot be revoked", "device", r.device, "old_serial", m.OldSerial)
	}
	return revoked, nil
}

// checkAbort reports whether the rollout is aborted: it was already (st), or the failure
// ratio has now passed Config.AbortRatio, in which case it persists the aborted state and
// says so loudly. It runs under the registry lock, so signers never race to abort.
func (s *Signer) checkAbort(tx *registry.Tx, st *RolloutState, now time.Time) bool {
	if st.Aborted {
		return true
	}
	if s.cfg.AbortRatio <= 0 {
		return false
	}
	since := now.Add(-s.cfg.AbortWindow)
	if st.ResumedAt.After(since) {
		since = st.ResumedAt
	}
	o := tx.Outcomes(since, now, s.cfg.ConfirmTimeout)
	if o.Issued < s.cfg.AbortMin || float64(o.Failed) <= s.cfg.AbortRatio*float64(o.Issued) {
		return false
	}
	*st = RolloutState{
		Aborted:   true,
		Reason:    fmt.Sprintf("%d of %d certificates issued since %s were not confirmed within %s (ratio %.2f > %.2f)", o.Failed, o.Issued, since.UTC().Format(time.RFC3339), s.cfg.ConfirmTimeout, float64(o.Failed)/float64(o.Issued), s.cfg.AbortRatio),
		AbortedAt: now.UTC(),
		ResumedAt: st.ResumedAt,
		Issued:    o.Issued,
		Failed:    o.Failed,
	}
	if err := saveRollout(s.cfg.RolloutPath, *st); err != nil {
		s.log.Error("signer: cannot persist the aborted rollout; this signer refuses new certificates anyway", "err", err)
	}
	s.log.Error("signer: ROLLOUT ABORTED: no new certificates until `fleetctl rollout resume`", "reason", st.Reason, "issued", o.Issued, "failed", o.Failed, "pending", o.Pending)
	return true
}

// tally counts the decisions of one transaction; they reach Stats only once it committed.
type tally struct {
	issued, reissued, refused, rateLimited, confirmed, revoked, ignored uint64
}

func (t *tally) add(s *Signer) {
	s.stats.issued.Add(t.issued)
	s.stats.reissued.Add(t.reissued)
	s.stats.refused.Add(t.refused)
	s.stats.rateLimited.Add(t.rateLimited)
	s.stats.confirmed.Add(t.confirmed)
	s.stats.revoked.Add(t.revoked)
	s.stats.ignored.Add(t.ignored)
}
