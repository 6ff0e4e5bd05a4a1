package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/strictjson"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
)

// handleMessage is the MQTT handler. transport/mqtt calls it on one worker goroutine, in
// arrival order; a redelivered message is harmless because every command must carry a
// sequence above the persisted high-water mark.
func (a *Agent) handleMessage(ctx context.Context, m mqtt.Message) {
	id := a.DeviceID()
	switch m.Topic {
	case topic.DeviceCmd(id):
		a.handleCommand(ctx, m.Topic, m.Payload)
	case topic.DeviceDesired(id):
		a.handleDesired(ctx, m.Topic, m.Payload)
	case topic.Cert(id):
		a.handleCertResponse(m.Payload)
	case topic.Signal(id):
		if v := a.video.Load(); v != nil {
			v.handle(ctx, m.Payload)
		}
	default:
		// Fleet-wide messages come on the device's own shard; any shard's are the same signed
		// messages, so which one brought it does not matter.
		switch _, leaf, _ := topic.ParseFleet(m.Topic); leaf {
		case topic.LeafCmd:
			a.handleCommand(ctx, m.Topic, m.Payload)
		case topic.LeafDesired:
			a.handleDesired(ctx, m.Topic, m.Payload)
		default:
			a.log.Debug("ignoring message on unhandled topic", "topic", m.Topic, "bytes", len(m.Payload))
		}
	}
}

// handleCommand verifies a command envelope, persists its sequence, then executes it. The
// sequence is persisted before the command runs, so a crash after running it can never make the
// redelivered copy run twice; the replay window (state.AcceptCommand) accepts each sequence
// once even when the broker redelivers queued commands out of order.
func (a *Agent) handleCommand(ctx context.Context, t string, payload []byte) {
	a.mu.Lock()
	v := a.verifier
	a.mu.Unlock()
	c, kid, err := certs.OpenCommand(v, payload)
	if err != nil {
		a.reject(t, kid, nil, err)
		return
	}
	a.mu.Lock()
	err = certs.CheckCommand(c, a.DeviceID(), a.clk.Now(), a.st.CommandHWM)
	if err == nil {
		st := a.st
		switch {
		case !st.AcceptCommand(c.Seq):
			err = fmt.Errorf("%w: seq %d was accepted before", certs.ErrReplay, c.Seq)
		case readOnly[c.Type]:
			// A replay of a command that changes nothing is harmless, so its place in the
			// window is persisted with the next write rather than fsynced now: a Pi's SD
			// card is slow and wears.
			a.st = st
		default:
			if err = a.store.Save(st); err == nil {
				a.st = st
			}
		}
	}
	a.mu.Unlock()
	if err != nil {
		a.reject(t, kid, c, err)
		if c != nil && errors.Is(err, certs.ErrReplay) {
			// The broker redelivers a command whose reply may have been lost with the
			// connection: answer it again, from the cache, without running it again.
			a.resendReply(ctx, c.Seq)
		}
		return
	}
	a.cmdsOK.Add(1)
	a.log.Info("command accepted", "type", c.Type, "seq", c.Seq, "kid", kid)
	reply := a.execute(ctx, c)
	b, err := wire.Encode(reply)
	if err != nil {
		a.log.Error("could not encode reply", "type", c.Type, "seq", c.Seq, "err", err)
		return
	}
	a.replies.add(c.Seq, b)
	a.sendReply(ctx, c.Seq, b)
}

// sendReply publishes a reply; one that cannot be sent now is sent again after the next
// connect (flushReplies), so a reply lost with a connection is not lost for good (R3).
func (a *Agent) sendReply(ctx context.Context, seq uint64, b []byte) {
	if err := a.publishReply(ctx, b); err != nil {
		a.replies.markUnsent(seq)
		a.log.Warn("could not publish reply; will send it again after reconnecting", "seq", seq, "err", err)
		return
	}
	a.replies.markSent(seq)
}

func (a *Agent) publishReply(ctx context.Context, b []byte) error {
	box := a.pub.Load()
	if box == nil {
		return errors.New("agent: not running")
	}
	return box.Publish(ctx, topic.Reply(a.DeviceID()), 1, false, b)
}

// resendReply sends the cached reply of seq again, if it is still cached.
func (a *Agent) resendReply(ctx context.Context, seq uint64) {
	if b := a.replies.get(seq); b != nil {
		a.sendReply(ctx, seq, b)
	}
}

// flushReplies sends again the replies that could not be sent, after a connect.
func (a *Agent) flushReplies(ctx context.Context) {
	for _, seq := range a.replies.unsentSeqs() {
		a.resendReply(ctx, seq)
	}
}

// replyCache keeps the encoded replies of the last state.ReplayWindow accepted commands, and
// which of them could not be sent.
type replyCache struct {
	mu     sync.Mutex
	order  []uint64
	byseq  map[uint64][]byte
	unsent map[uint64]bool
}

func (c *replyCache) add(seq uint64, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byseq == nil {
		c.byseq, c.unsent = map[uint64][]byte{}, map[uint64]bool{}
	}
	if _, ok := c.byseq[seq]; !ok {
		c.order = append(c.order, seq)
	}
	c.byseq[seq] = b
	for len(c.order) > state.ReplayWindow {
		old := c.order[0]
		c.order = c.order[1:]
		delete(c.byseq, old)
		delete(c.unsent, old)
	}
}

func (c *replyCache) get(seq uint64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byseq[seq]
}

func (c *replyCache) markUnsent(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byseq[seq]; ok {
		c.unsent[seq] = true
	}
}

func (c *replyCache) markSent(seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.unsent, seq)
}

func (c *replyCache) unsentSeqs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for _, seq := range c.order {
		if c.unsent[seq] {
			out = append(out, seq)
		}
	}
	return out
}

// readOnly lists the command types that change nothing on the device.
var readOnly = map[string]bool{"ping": true}

func (a *Agent) reject(t, kid string, c *certs.Command, err error) {
	a.cmdsRejected.Add(1)
	attrs := []any{"topic", t, "reason", err}
	if kid != "" {
		attrs = append(attrs, "kid", kid)
	}
	if c != nil {
		attrs = append(attrs, "type", c.Type, "seq", c.Seq)
	}
	if errors.Is(err, certs.ErrReplay) {
		// A QoS 1 redelivery looks the same as a replay; both are harmless.
		a.log.Info("command refused", attrs...)
		return
	}
	a.log.Warn("command refused", attrs...)
}

func (a *Agent) execute(ctx context.Context, c *certs.Command) *wire.Reply {
	r := &wire.Reply{V: wire.Version, Seq: c.Seq, Type: c.Type}
	switch c.Type {
	case "ping":
		if len(c.Args) != 0 && string(c.Args) != "null" && string(c.Args) != "{}" {
			r.Error = wire.ErrCodeBadArgs
			return r
		}
		r.OK = true
		r.Status = a.status()
	case "privacy":
		r.Error = a.privacyCommand(ctx, c.Args)
		r.OK = r.Error == ""
	default:
		r.Error = wire.ErrCodeUnknownType
	}
	return r
}

// privacyArgs are the arguments of the "privacy" command. An operator alone cannot watch or
// unmute a home's camera: the command must carry a grant of scope owner for this device,
// which only the owner's app obtains.
type privacyArgs struct {
	On    *bool  `json:"on"`
	Grant []byte `json:"grant"` // signed owner grant (certs.SignGrant), base64
}

// privacyCommand turns privacy mode on or off for a command carrying the owner's grant, and
// returns the reply's error code ("" on success).
func (a *Agent) privacyCommand(ctx context.Context, args []byte) string {
	var p privacyArgs
	if err := strictjson.Unmarshal(args, &p); err != nil || p.On == nil || len(p.Grant) == 0 || len(p.Grant) > certs.MaxGrantSize {
		return wire.ErrCodeBadArgs
	}
	if _, err := a.CheckGrant(p.Grant, certs.ScopeOwner); err != nil {
		a.log.Warn("privacy command refused", "reason", err)
		return wire.ErrCodeGrant
	}
	if err := a.SetPrivacy(ctx, *p.On, "owner command"); err != nil {
		a.log.Error("could not change privacy mode", "err", err)
		return wire.ErrCodeInternal
	}
	return ""
}

func (a *Agent) status() *wire.Status {
	c := a.Certificate()
	a.mu.Lock()
	ks := a.keySet
	a.mu.Unlock()
	return &wire.Status{
		Firmware:     a.cfg.Firmware,
		UptimeS:      int64(a.clk.Now().Sub(a.start) / time.Second),
		CertSerial:   serialHex(c),
		CertNotAfter: c.NotAfter.Unix(),
		KeySet:       ks,
		CmdsOK:       a.cmdsOK.Load(),
		CmdsRejected: a.cmdsRejected.Load(),
	}
}
