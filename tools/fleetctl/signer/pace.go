package signer

import (
	"container/heap"
	"math"
	mrand "math/rand/v2"
	"time"

	"github.com/camagent/camagent/agent/wire"
)

const (
	// paceSpan is how far back the signer remembers its issues.
	paceSpan = 5 * time.Minute
	// paceWindow is the span over which an issue rate is averaged.
	paceWindow = 10 * time.Second
	// maxRetryAfter caps the retry hints the signer gives.
	maxRetryAfter = time.Hour
)

const paceSlots = int(paceSpan / time.Second)

// pace tells each device answered rate_limited when to come back (wire.CertResponse
// RetryAfter): one place after the devices told before it, at the fastest pace the
// signer issued at over the last paceSpan (averaged over paceWindow), or at the fleet's rate
// limit if that is slower.
//
// Without the hint a device retries after its own backoff, which grows with every rate_limited
// answer: in 10,000-device breaches the devices paced most often waited minutes after the
// campaign had room for them (docs/scale-out.md).
//
// The fastest recent pace, not the latest: the signer issues only as fast as devices ask, so
// the latest pace is set by the hints it gave, and after a lull (a broker restart, a window
// full of devices that vanished) it would keep the devices coming back as slowly as they did
// in the lull. A pace above what the signer can do now costs little: a device that comes back
// too early is held, then told again.
//
// Each signer of a fleet spaces its own answers at its own pace, so the devices come back at
// about the fleet's pace in all. It is used by the decision loop only.
type pace struct {
	counts  [paceSlots]int       // issues in each second, by Unix second modulo paceSlots
	secs    [paceSlots]int64     // the Unix second each count is for
	first   time.Time            // the first issue this signer made; zero before
	places  map[string]time.Time // device → the end of its place (see place), while ahead
	soonest placeHeap            // the places, soonest first, some stale (see place)
}

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

// rate is the most certificates a second the signer issued over any paceWindow of the last
// paceSpan (over the time since its first issue, if that is shorter); 0 if it issued none.
func (p *pace) rate(now time.Time) float64 {
	sec := now.Unix()
	var byAge [paceSlots]int
	for i := range p.counts {
		if age := sec - p.secs[i]; age >= 0 && age < int64(paceSlots) {
			byAge[age] = p.counts[i]
		}
	}
	w := int(paceWindow / time.Second)
	best, sum := 0, 0
	for age := range byAge {
		sum += byAge[age]
		if age >= w {
			sum -= byAge[age-w]
		}
		best = max(best, sum)
	}
	if best == 0 {
		return 0
	}
	span := min(paceWindow, now.Sub(p.first))
	return float64(best) / max(span.Seconds(), 1)
}

// retryAfter gives device, told rate_limited at now, its place: in whole seconds, at least
// one; or 0 when the signer has no pace to go by (it issued nothing lately and has no rate
// limit): the device then retries after its own backoff. limit is the fleet's rate limit in
// certificates a second (0: none) and wait how long until that limit allows the next
// certificate.
//
// The place is after the places of the devices told before it that are still ahead: one
// place apart, at the pace. A device told again gives up its earlier place, and one issued a
// certificate gives up its own (served): a device whose answer was lost (a broker restart
// loses thousands) asks again before its place, and would otherwise hold two, pushing every
// later device back while the signers stand idle. A device that comes back to another signer
// of the fleet keeps its place here until the place passes.
//
// The requests the signer holds do not push the place back: the device told is mostly the
// oldest of them (held the longest), and the others are served or told in turn within the
// hold, while the device is on its way back. Counting them put every device told in a
// breach's first burst (all held since the same moment) a hold's length ahead, and the
// signers stood idle until they came back (a 10,000-device run on Mosquitto).
//
// A place further than maxRetryAfter ahead is drawn at random from its second half and not
// kept, so that a fleet much larger than an hour's pace does not come back all at once.
func (p *pace) retryAfter(now time.Time, device string, limit float64, wait time.Duration) int {
	p.served(device)
	r := p.rate(now)
	if limit > 0 && (r == 0 || r > limit) {
		r = limit
	}
	if r == 0 {
		return 0
	}
	p.expire(now)
	gap := float64(time.Second) / r
	at := now.Add(wait + time.Duration(float64(len(p.places))*gap))
	if at.Sub(now) > maxRetryAfter {
		at = now.Add(maxRetryAfter/2 + time.Duration(mrand.Int64N(int64(maxRetryAfter/2))))
	} else {
		if p.places == nil {
			p.places = make(map[string]time.Time)
		}
		end := at.Add(time.Duration(gap))
		p.places[device] = end
		heap.Push(&p.soonest, place{end: end, device: device})
	}
	secs := int(math.Ceil(at.Sub(now).Seconds()))
	return min(max(secs, 1), wire.MaxRetryAfter)
}

// served gives up device's place, if it has one: it was issued a certificate, or is told
// again.
func (p *pace) served(device string) { delete(p.places, device) }

// expire forgets the places that have passed.
func (p *pace) expire(now time.Time) {
	for len(p.soonest) > 0 && !p.soonest[0].end.After(now) {
		pl := heap.Pop(&p.soonest).(place)
		if end, ok := p.places[pl.device]; ok && end.Equal(pl.end) {
			delete(p.places, pl.device)
		}
	}
}

// place is a device's place in pace.soonest: the time it is told to come back, and one gap
// of the pace after, which end marks. One whose device has another place in pace.places, or
// none, is stale and only waits to be popped.
type place struct {
	end    time.Time
	device string
}

// placeHeap orders places soonest first (container/heap).
type placeHeap []place

func (h placeHeap) Len() int           { return len(h) }
func (h placeHeap) Less(i, j int) bool { return h[i].end.Before(h[j].end) }
func (h placeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *placeHeap) Push(x any)        { *h = append(*h, x.(place)) }
func (h *placeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
