package signer

import (
	"math"
	"time"

	"github.com/camagent/camagent/agent/wire"
)

// paceSpan is how far back the signer's own issues count towards its pace.
const paceSpan = 30 * time.Second

// maxRetryAfter caps the retry hints the signer gives, so that a device told to wait for a
// pace that then picks up is not left idle for long.
const maxRetryAfter = time.Hour

// pace tells each device answered rate_limited when to come back (wire.CertResponse
// RetryAfter): after the requests this signer holds, and after the devices it told before,
// one place apart at the pace it has been issuing at. Without the hint a device retries after
// its own backoff, which grows with every rate_limited answer: in a 10,000-device breach the
// devices paced most often waited minutes after the campaign had room for them
// (docs/scale-out.md). Each signer of a fleet spaces its own answers at its own pace, so the
// devices come back at about the fleet's pace in all.
//
// It is used by the decision loop only.
type pace struct {
	counts [paceSlots]int   // issues in each second, by Unix second modulo paceSlots
	secs   [paceSlots]int64 // the Unix second each count is for
	first  time.Time        // the first issue this signer made; zero before
	next   time.Time        // the time after the last one told
}

const paceSlots = int(paceSpan / time.Second)

// issued records n new certificates issued at now.
func (p *pace) issued(now time.Time, n int) {
	if n <= 0 {
		return
	}
	if p.first.IsZero() {
		p.first = now
	}
	sec := now.Unix()
	i := int(sec % int64(paceSlots))
	if p.secs[i] != sec {
		p.secs[i], p.counts[i] = sec, 0
	}
	p.counts[i] += n
}

// rate is the signer's issues per second over the last paceSpan (or since its first issue,
// if that is more recent, but at least a second); 0 when it issued none in that time.
func (p *pace) rate(now time.Time) float64 {
	sec := now.Unix()
	n := 0
	for i := range p.counts {
		if age := sec - p.secs[i]; age >= 0 && age < int64(paceSlots) {
			n += p.counts[i]
		}
	}
	if n == 0 {
		return 0
	}
	span := min(paceSpan, now.Sub(p.first))
	return float64(n) / max(span.Seconds(), 1)
}

// retryAfter gives a device told rate_limited at now its place: in whole seconds, at least
// one, or 0 when the signer has no pace to go by (it issued nothing lately and has no rate
// limit): the device then retries after its own backoff. held is the number of requests
// the signer holds, which go before it; limit is the fleet's rate limit in certificates a
// second (0: none), which bounds the pace, and wait how long until that limit allows the
// next certificate.
func (p *pace) retryAfter(now time.Time, held int, limit float64, wait time.Duration) int {
	r := p.rate(now)
	if limit > 0 && (r == 0 || r > limit) {
		r = limit
	}
	if r == 0 {
		return 0
	}
	gap := time.Duration(float64(time.Second) / r)
	at := now.Add(wait + time.Duration(float64(held)/r*float64(time.Second)))
	if p.next.After(at) {
		at = p.next
	}
	if cap := now.Add(maxRetryAfter); at.After(cap) {
		at = cap
	}
	p.next = at.Add(gap)
	secs := int(math.Ceil(at.Sub(now).Seconds()))
	return min(max(secs, 1), wire.MaxRetryAfter)
}
