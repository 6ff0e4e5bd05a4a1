package broker

import (
	"crypto/tls"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/camagent/camagent/certs"
)

// clientConn is what the broker hands mochi as a client's net.Conn: the TLS connection, plus what
// the broker keeps per connection. The hooks reach it through mochi's Client.Net.Conn, so a
// publish finds its connection's rate limit without a lookup in a shared table.
type clientConn struct {
	*tls.Conn
	// rate is the publish limit of the connection's identity, set by OnConnect; nil: none
	// (operators, signers). Every connection of one identity shares its bucket, whatever the
	// "~suffix" of its client id, and a reconnection keeps the bucket of the connection before
	// until it has refilled: neither more sessions nor reconnecting earns more messages.
	rate atomic.Pointer[bucket]
	// limited is the identity whose bucket rate is, set with it; released says the
	// connection gave its share of that bucket back (identityBuckets.release), once.
	limited  string
	released atomic.Bool
	// cut is set once the connection is closed for publishing over its limit for too long.
	cut atomic.Bool
	// accepted is set once the broker accepted the connection's CONNECT
	// (OnConnectAuthenticate): a turn of the connection budget that ends without it was
	// wasted (pacer.wasted).
	accepted atomic.Bool
}

// tlsConn returns the TLS connection under a client's net.Conn, or nil.
func tlsConn(cl *mqtt.Client) *tls.Conn {
	switch c := cl.Net.Conn.(type) {
	case *clientConn:
		return c.Conn
	case *tls.Conn:
		return c
	}
	return nil
}

// PublishLimit is a token bucket for one client's publishes: Burst messages at once, then Rate
// a second. The zero value means the default of the field that holds it.
type PublishLimit struct {
	// Rate is how many messages a second the bucket refills. Negative means no limit (Burst
	// is then ignored); zero, with Burst zero, means the default.
	Rate float64
	// Burst is how many messages the bucket holds: what a client that was quiet for
	// Burst/Rate seconds may publish at once. At least 1 when Rate is positive.
	Burst int
}

// off reports whether l limits nothing.
func (l PublishLimit) off() bool { return l.Rate < 0 }

// verdict is what a bucket says of one publish.
type verdict struct {
	drop    bool          // over the limit: acknowledge and drop
	started bool          // this drop starts an episode over the limit
	over    time.Duration // with drop: how long the episode has lasted
	dropped uint64        // with drop: messages dropped in the episode, this one included
	// ended, on an accepted publish, is the episode that the client's quiet has ended, for
	// its one log line: its drops and its length.
	ended    bool
	endedN   uint64
	endedFor time.Duration
}

// bucket is one identity's token bucket. Its episode is a span during which messages were
// dropped: it starts with a drop and ends once episodeQuiet has passed without one, so a
// client that goes on publishing over its rate stays in one episode and is logged once, while
// one that overran its burst now and then, publishing within its rate in between, starts a
// new episode each time and is never cut for the sum of them. It is safe for concurrent use:
// every connection of the identity shares it.
type bucket struct {
	rate, burst float64

	mu        sync.Mutex
	tokens    float64
	last      time.Time // when tokens was last refilled
	since     time.Time // the episode's first drop; zero: no episode
	lastDrop  time.Time // the episode's last drop
	dropped   uint64    // the episode's drops
	cutLogged bool      // the episode's disconnection was logged
}

// episodeQuiet is how long a bucket must go without dropping a message for its episode over
// the limit to end: longer than any pause a flooding client makes between its messages, and
// short enough that a client publishing within its rate between two bursts is not one
// flooding for the whole time.
const episodeQuiet = 5 * time.Second

func newBucket(l PublishLimit, now time.Time) *bucket {
	return &bucket{rate: l.Rate, burst: float64(l.Burst), tokens: float64(l.Burst), last: now}
}

// refill adds the tokens earned since the last call; a clock that went back earns none. The
// caller holds b.mu.
func (b *bucket) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	} else if d < 0 {
		b.last = now
	}
}

// take spends a token for one publish at now, or says to drop it.
func (b *bucket) take(now time.Time) verdict {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	var v verdict
	if !b.since.IsZero() && now.Sub(b.lastDrop) >= episodeQuiet {
		v.ended, v.endedN, v.endedFor = true, b.dropped, b.lastDrop.Sub(b.since)
		b.since, b.dropped, b.cutLogged = time.Time{}, 0, false
	}
	if b.tokens >= 1 {
		b.tokens--
		return v
	}
	if b.since.IsZero() {
		b.since, v.started = now, true
	}
	b.lastDrop = now
	b.dropped++
	v.drop, v.over, v.dropped = true, now.Sub(b.since), b.dropped
	return v
}

// credit gives back one token, up to the burst: for a message delivered to the bucket's
// client, which may owe an answer to it.
func (b *bucket) credit() {
	b.mu.Lock()
	b.tokens = min(b.burst, b.tokens+1)
	b.mu.Unlock()
}

// markCutLogged records that the episode's disconnection was logged, and reports whether it
// had been already.
func (b *bucket) markCutLogged() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	was := b.cutLogged
	b.cutLogged = true
	return was
}

// full reports whether the bucket, refilled at now, holds its whole burst again: it then
// remembers nothing a new bucket would not.
func (b *bucket) full(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(now)
	return b.tokens >= b.burst
}

// minParked is the size of the table of parked buckets below which it is never swept.
const minParked = 1024

// parkedBuckets keeps the buckets of identities whose last connection ended, until they are
// full again, so that an identity connecting again does not start over with a full bucket.
// identityBuckets guards it with its lock. It is swept of full buckets whenever it
// has doubled since the last sweep, so it holds about what was parked within the last
// Burst/Rate seconds. It is used at connection and disconnection only, never per publish.
type parkedBuckets struct {
	m     map[string]*bucket
	sweep int // the size that triggers the next sweep
}

// park keeps bk for id unless it is full at now.
func (p *parkedBuckets) park(id string, bk *bucket, now time.Time) {
	if bk.full(now) {
		return
	}
	if p.m == nil {
		p.m = make(map[string]*bucket)
	}
	p.m[id] = bk
	if len(p.m) < max(p.sweep, minParked) {
		return
	}
	for k, old := range p.m {
		if old.full(now) {
			delete(p.m, k)
		}
	}
	p.sweep = 2 * len(p.m)
}

// take returns and forgets the bucket parked for id, or nil.
func (p *parkedBuckets) take(id string) *bucket {
	bk := p.m[id]
	if bk != nil {
		delete(p.m, id)
	}
	return bk
}

// sessionCap counts the sessions of each identity that may hold several (every role but
// device: a device's client id is its identity, so it holds one session at most) and refuses a
// new one past the cap. A session counts while mochi keeps it under its client id (connected,
// or persistent and not yet expired) or while the connection admitted under that id is still
// open (between OnConnect and mochi's taking it in). What it records is checked against mochi
// at every admission of the identity, so a session that ended in any way, clean disconnection,
// expiry, a connection that failed after OnConnect, stops counting even if no hook said so.
type sessionCap struct {
	max int // the cap; never below 1

	mu      sync.Mutex
	seeded  bool                               // the sessions restored from the store were counted
	held    map[string]map[string]*mqtt.Client // identity → client id → the client last admitted under it
	refused atomic.Uint64
}

// admit decides whether cl, with identity, may connect: always if its client id names a
// session the broker keeps (a reconnection or a take-over), otherwise if the identity holds
// fewer than max sessions. It returns how many sessions the identity holds, cl's included if
// admitted.
func (c *sessionCap) admit(srv *mqtt.Server, identity string, cl *mqtt.Client) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.seeded {
		// The sessions mochi restored from the store, once: they are in srv.Clients from
		// Serve on, and every session added later passes here first.
		c.seeded = true
		for id, kept := range srv.Clients.GetAll() {
			if other := identityOf(id); other != "" {
				c.record(other, id, kept)
			}
		}
	}
	ids := c.held[identity]
	for id, last := range ids {
		if _, kept := srv.Clients.Get(id); !kept && last.Closed() {
			delete(ids, id)
		}
	}
	if _, known := ids[cl.ID]; !known && len(ids) >= c.max {
		if _, kept := srv.Clients.Get(cl.ID); !kept {
			c.refused.Add(1)
			return len(ids), false
		}
	}
	c.record(identity, cl.ID, cl)
	return len(c.held[identity]), true
}

// record notes cl as the last client admitted under id. The caller holds c.mu.
func (c *sessionCap) record(identity, id string, cl *mqtt.Client) {
	if c.held == nil {
		c.held = make(map[string]map[string]*mqtt.Client)
	}
	ids := c.held[identity]
	if ids == nil {
		ids = make(map[string]*mqtt.Client)
		c.held[identity] = ids
	}
	ids[id] = cl
}

// forget drops the record of cl's session, whose end mochi has announced, unless another client
// has been admitted under its id since.
func (c *sessionCap) forget(cl *mqtt.Client) {
	identity := identityOf(cl.ID)
	if identity == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := c.held[identity]
	if ids[cl.ID] == cl {
		delete(ids, cl.ID)
	}
	if len(ids) == 0 {
		delete(c.held, identity)
	}
}

// identityOf returns the identity of a client id whose role may hold several sessions (any
// but device), or "" for a device's or an id that names no identity.
func identityOf(clientID string) string {
	identity := certs.ClientIDIdentity(clientID)
	role, _, err := certs.ParseIdentity(identity)
	if err != nil || role == certs.RoleDevice {
		return ""
	}
	return identity
}

// publishLimit returns the publish limit of role's connections; one that is off for operators
// and signers.
func (b *Broker) publishLimit(role certs.Role) PublishLimit {
	switch role {
	case certs.RoleDevice, certs.RoleBootstrap:
		return b.cfg.DevicePublishLimit
	case certs.RoleViewer:
		return b.cfg.ViewerPublishLimit
	}
	return PublishLimit{Rate: -1}
}

// identityBuckets holds the publish bucket of every identity with a connection open, shared by
// all of them, and parks it when the last closes. It is used at connection and disconnection
// only, never per publish.
type identityBuckets struct {
	mu     sync.Mutex
	live   map[string]*liveBucket
	parked parkedBuckets
}

// liveBucket is an identity's bucket and how many of its connections hold it.
type liveBucket struct {
	bk    *bucket
	conns int
}

// acquire returns identity's bucket for one more connection: the one its open connections
// share, or the one its last connection left if that has not refilled yet, or a new full one.
func (ib *identityBuckets) acquire(identity string, limit PublishLimit, now time.Time) *bucket {
	ib.mu.Lock()
	defer ib.mu.Unlock()
	if lb := ib.live[identity]; lb != nil {
		lb.conns++
		return lb.bk
	}
	bk := ib.parked.take(identity)
	if bk == nil {
		bk = newBucket(limit, now)
	}
	if ib.live == nil {
		ib.live = make(map[string]*liveBucket)
	}
	ib.live[identity] = &liveBucket{bk: bk, conns: 1}
	return bk
}

// release gives back one connection's share of identity's bucket; the last one parks it.
func (ib *identityBuckets) release(identity string, now time.Time) {
	ib.mu.Lock()
	defer ib.mu.Unlock()
	lb := ib.live[identity]
	if lb == nil {
		return
	}
	if lb.conns--; lb.conns > 0 {
		return
	}
	delete(ib.live, identity)
	ib.parked.park(identity, lb.bk, now)
}
