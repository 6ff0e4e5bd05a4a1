package relay_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/privacy/egress"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/mqtt/topic"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// pionOffer returns the SDP of a real viewer's offer.
func pionOffer(t *testing.T) string { return camviewtest.NewViewer(t).SDP }

// answerKeys holds the answer key of each offer that offer made, by session id.
var answerKeys sync.Map

func offer(t *testing.T, sdp string, grant []byte) signal.Offer {
	t.Helper()
	k := signal.NewAnswerKey()
	o := signal.Offer{V: signal.Version, Session: signal.NewSession(), Key: signal.NewKey(), AnswerKey: k.Public(), SDP: sdp, Grant: grant}
	answerKeys.Store(o.Session, k)
	return o
}

// offerVia sends o, made by offer, through r with its answer key.
func offerVia(r *relay.Relay, ctx context.Context, device string, o signal.Offer) (signal.Answer, error) {
	k, _ := answerKeys.Load(o.Session)
	key, _ := k.(*signal.AnswerKey)
	return r.Offer(ctx, device, o, key)
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), camviewtest.Timeout)
	t.Cleanup(cancel)
	return ctx
}

func TestConcurrentOffersAreAnsweredEachInItsSession(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	a, b := cam.Relay(t, "a"), cam.Relay(t, "b")
	grant := cam.Grant(t, nil)

	type result struct {
		relay   *relay.Relay
		session string
		answer  signal.Answer
		err     error
	}
	results := make(chan result, 4)
	var wg sync.WaitGroup
	for _, r := range []*relay.Relay{a, a, b, b} {
		o := offer(t, pionOffer(t), grant)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ans, err := offerVia(r, timeout(t), cam.ID, o)
			results <- result{r, o.Session, ans, err}
		}()
	}
	wg.Wait()
	close(results)
	for res := range results {
		if res.err != nil {
			t.Fatalf("Offer: %v", res.err)
		}
		if res.answer.Session != res.session || res.answer.SDP == "" {
			t.Errorf("session %s got an answer for %s", res.session, res.answer.Session)
		}
		if res.relay.Ended(res.session) == nil || res.relay.Candidates(res.session) == nil {
			t.Errorf("session %s is not live on its relay after the answer", res.session)
		}
		if err := res.relay.Hangup(timeout(t), cam.ID, res.session); err != nil {
			t.Errorf("Hangup: %v", err)
		}
		if res.relay.Ended(res.session) != nil {
			t.Errorf("session %s still live after Hangup", res.session)
		}
	}
	if a.Sessions() != 0 || b.Sessions() != 0 {
		t.Errorf("sessions left: %d and %d", a.Sessions(), b.Sessions())
	}
}

func TestARefusalComesBackAsRefusedError(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	for _, tc := range []struct {
		name  string
		grant []byte
		want  signal.RefusalReason
	}{
		{"an expired grant", cam.ExpiredGrant(t), signal.RefuseGrant},
		{"another camera's grant", cam.Grant(t, func(g *certs.Grant) { g.Device = "cam-0002" }), signal.RefuseGrant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := offerVia(r, timeout(t), cam.ID, offer(t, pionOffer(t), tc.grant))
			var refused *relay.RefusedError
			if !errors.As(err, &refused) || refused.Refusal.Reason != tc.want {
				t.Fatalf("Offer = %v, want a %s refusal", err, tc.want)
			}
			if r.Sessions() != 0 {
				t.Errorf("a refused session stays known")
			}
		})
	}
	t.Run("an offer without an H.264 video section", func(t *testing.T) {
		sdp := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
		_, err := offerVia(r, timeout(t), cam.ID, offer(t, sdp, cam.Grant(t, nil)))
		var refused *relay.RefusedError
		if !errors.As(err, &refused) || refused.Refusal.Reason != signal.RefuseBadOffer {
			t.Fatalf("Offer = %v, want a bad_offer refusal", err)
		}
	})
}

func TestTheCamerasByeReachesItsSession(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	o := offer(t, pionOffer(t), cam.Grant(t, nil))
	if _, err := offerVia(r, timeout(t), cam.ID, o); err != nil {
		t.Fatal(err)
	}
	ended := r.Ended(o.Session)
	cam.Rotate(t) // ends every session with "revoked"
	select {
	case bye := <-ended:
		if bye.Session != o.Session || bye.Reason != signal.ByeRevoked {
			t.Fatalf("got %v, want bye revoked for %s", bye, o.Session)
		}
	case <-time.After(camviewtest.Timeout):
		t.Fatal("no bye")
	}
}

// deviceClient is an MQTT session as a device of cam's fleet: a camera that says what the
// test tells it to. With a handler, it reads its dev/<id>/down/signal.
func deviceClient(t *testing.T, cam *camviewtest.Camera, id string, handler func(context.Context, mqtt.Message)) *mqtt.Client {
	t.Helper()
	dev := fleettest.Enroll(t, cam.Fleet, id)
	host, _ := certs.BrokerHost(cam.URL)
	cfg := mqtt.Config{BrokerURL: cam.URL, ClientID: id, TLS: certs.ClientTLSConfig(cam.Fleet.Pool, host, certs.NewHolder(dev.Cert))}
	if handler != nil {
		cfg.Subscriptions, cfg.Handler = []mqtt.Subscription{{Filter: topic.Signal(id), QoS: 0}}, handler
	}
	c, err := mqtt.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := c.WaitConnected(timeout(t)); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOnlyTheCameraOfferedToCanAnswer(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	other := deviceClient(t, cam, "cam-0002", nil)
	target := deviceClient(t, cam, "cam-0003", nil)

	o := offer(t, "v=0\r\n", []byte("grant"))
	send := func(dev *mqtt.Client, id string, m signal.Message) {
		b, err := signal.Encode(m)
		if err != nil {
			t.Error(err)
			return
		}
		if err := dev.Publish(context.Background(), topic.SignalUp(id), 0, false, b); err != nil {
			t.Error(err)
		}
	}
	answer, err := signal.Seal(signal.Answer{V: signal.Version, Session: o.Session, SDP: "v=0\r\n"}, o.AnswerKey)
	if err != nil {
		t.Fatal(err)
	}

	// answerOnce sends the answer from dev once the relay knows the session. The test waits
	// for it to return: a publish still in progress when the test ends would see its
	// connection closed by the cleanup.
	answerOnce := func(dev *mqtt.Client, id string) (sent chan struct{}) {
		sent = make(chan struct{})
		go func() {
			defer close(sent)
			waitSessions(t, r, 1)
			send(dev, id, answer)
		}()
		return sent
	}

	// Another camera's answer for the session is ignored: the offer times out.
	sent := answerOnce(other, "cam-0002")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := offerVia(r, ctx, "cam-0003", o); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Offer with an answer from another camera = %v, want a timeout", err)
	}
	<-sent
	if r.Sessions() != 0 {
		t.Fatal("a timed-out session stays known")
	}

	// The camera offered to is heard.
	sent = answerOnce(target, "cam-0003")
	got, err := offerVia(r, timeout(t), "cam-0003", o)
	<-sent
	if err != nil || got.Session != o.Session {
		t.Fatalf("Offer = %v, %v; want the answer of cam-0003", got, err)
	}
}

// An answer that does not open with the offer's answer key (sealed to another key) fails the
// offer at once, and the relay tells the camera, which has answered and holds a place for the
// session, that it is over.
func TestAnAnswerThatDoesNotOpenEndsTheSession(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	const id = "cam-0003"
	byes := make(chan signal.Bye, 4)
	c := deviceClient(t, cam, id, func(_ context.Context, m mqtt.Message) {
		if msg, err := signal.Decode(m.Payload); err == nil {
			if b, ok := msg.(signal.Bye); ok {
				byes <- b
			}
		}
	})

	o := offer(t, "v=0\r\n", []byte("grant"))
	wrong, err := signal.Seal(signal.Answer{V: signal.Version, Session: o.Session, SDP: "v=0\r\n"}, signal.NewAnswerKey().Public())
	if err != nil {
		t.Fatal(err)
	}
	// The test waits for the publish to return: one still in progress when the test ends
	// would see its connection closed by the cleanup.
	sent := make(chan struct{})
	defer func() { <-sent }()
	go func() {
		defer close(sent)
		waitSessions(t, r, 1)
		b, _ := signal.Encode(wrong)
		if err := c.Publish(context.Background(), topic.SignalUp(id), 0, false, b); err != nil {
			t.Error(err)
		}
	}()
	if _, err := offerVia(r, timeout(t), id, o); err == nil || !strings.Contains(err.Error(), "does not open") {
		t.Fatalf("Offer with an answer sealed to another key = %v", err)
	}
	select {
	case b := <-byes:
		if b.Session != o.Session || b.Key != o.Key {
			t.Fatalf("bye %v for %s, key given: %v", b, o.Session, b.Key == o.Key)
		}
	case <-time.After(camviewtest.Timeout):
		t.Fatal("the camera got no bye")
	}
	if r.Sessions() != 0 {
		t.Fatal("the session stays known")
	}
}

// waitSessions waits until r knows n sessions.
func waitSessions(t *testing.T, r *relay.Relay, n int) {
	deadline := time.Now().Add(camviewtest.Timeout)
	for r.Sessions() != n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

func TestMisuseIsRefused(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	r := cam.Relay(t, "test")
	o := offer(t, "v=0\r\n", []byte("grant"))

	// A session id in use is refused while the first offer waits.
	first := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, err := offerVia(r, ctx, "cam-0009", o)
		first <- err
	}()
	waitSessions(t, r, 1)
	if _, err := offerVia(r, timeout(t), "cam-0009", o); !errors.Is(err, relay.ErrSessionInUse) {
		t.Errorf("a second offer for the session: %v, want ErrSessionInUse", err)
	}
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled offer: %v", err)
	}

	for name, f := range map[string]func() error{
		"an invalid device id": func() error { _, err := offerVia(r, timeout(t), "../x", offer(t, "v=0\r\n", []byte("g"))); return err },
		"an offer without a grant": func() error {
			_, err := offerVia(r, timeout(t), cam.ID, offer(t, "v=0\r\n", nil))
			return err
		},
		"a candidate for an unknown session": func() error {
			return r.Candidate(timeout(t), cam.ID, signal.NewSession(), signal.ICECandidate{})
		},
	} {
		if err := f(); err == nil {
			t.Errorf("%s was accepted", name)
		}
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := offerVia(r, timeout(t), cam.ID, offer(t, "v=0\r\n", []byte("g"))); !errors.Is(err, relay.ErrClosed) {
		t.Errorf("Offer after Close: %v, want ErrClosed", err)
	}
}

// Every viewer relay reads dev/+/up/signal, so it sees the session ids of the others'
// sessions in the camera's answers. Without the offer's key it can neither end such a session,
// nor trickle candidates into it, nor have the camera refuse it; without the offer's answer
// key it cannot read the answer, with the camera's addresses.
func TestAnotherRelayCannotEndOrFeedOrReadASession(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	alice := cam.Relay(t, "alice")

	// mallory: a viewer relay identity of the same fleet, on a bare MQTT session that
	// sends what the test tells it to and reads every camera's signaling.
	identity, err := certs.IdentityFor(certs.RoleViewer, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cam.Fleet.ViewerCertificate("mallory")
	if err != nil {
		t.Fatal(err)
	}
	seen := make(chan signal.Message, 64)
	host, _ := certs.BrokerHost(cam.URL)
	mallory, err := mqtt.New(mqtt.Config{
		BrokerURL: cam.URL, ClientID: fleet.ClientID(identity),
		TLS:           certs.ClientTLSConfig(cam.Fleet.Pool, host, certs.NewHolder(cert)),
		Subscriptions: []mqtt.Subscription{{Filter: topic.SignalUp("+"), QoS: 0}},
		Handler: func(_ context.Context, m mqtt.Message) {
			if msg, err := signal.Decode(m.Payload); err == nil {
				select {
				case seen <- msg:
				default:
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mallory.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := mallory.WaitConnected(timeout(t)); err != nil {
		t.Fatal(err)
	}

	v := camviewtest.NewViewer(t)
	o := offer(t, v.SDP, cam.Grant(t, nil))
	answer, err := offerVia(alice, timeout(t), cam.ID, o)
	if err != nil {
		t.Fatal(err)
	}
	v.Accept(t, answer.SDP)
	v.WaitFrames(t, 1)

	// mallory learns the session id from the answer, as any relay can; the answer itself,
	// sealed to alice's answer key, tells it nothing of the camera's addresses.
	var session string
	for session == "" {
		select {
		case m := <-seen:
			if a, ok := m.(signal.SealedAnswer); ok {
				session = a.Session
				if _, err := signal.NewAnswerKey().Open(a); err == nil {
					t.Fatal("mallory opened alice's answer")
				}
				if b, _ := signal.Encode(a); strings.Contains(string(b), "candidate") || strings.Contains(string(b), "127.0.0.1") {
					t.Fatalf("the answer mallory read shows the camera's candidates: %s", b)
				}
			}
		case <-time.After(camviewtest.Timeout):
			t.Fatal("mallory saw no answer")
		}
	}
	if session != o.Session {
		t.Fatalf("mallory saw the answer for %s, want %s", session, o.Session)
	}
	if !strings.Contains(answer.SDP, "candidate") {
		t.Fatalf("alice's answer has no candidates:\n%s", answer.SDP)
	}
	send := func(m signal.Message) {
		t.Helper()
		b, err := signal.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := mallory.Publish(timeout(t), topic.Signal(cam.ID), 0, false, b); err != nil {
			t.Fatal(err)
		}
	}
	forged := signal.NewKey()
	for range 80 { // more than a session's trickle allowance
		send(signal.Candidate{V: signal.Version, Session: session, Key: forged, Candidate: signal.ICECandidate{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 9 typ host"}})
	}
	send(signal.Bye{V: signal.Version, Session: session, Reason: signal.ByeHangup})
	send(signal.Bye{V: signal.Version, Session: session, Key: forged, Reason: signal.ByeHangup})
	theirs := offer(t, camviewtest.NewViewer(t).SDP, cam.Grant(t, nil))
	theirs.Session = session
	send(theirs)
	// The camera takes one MQTT session's messages in order: once the offer is logged,
	// everything before it was handled.
	cam.Log.WaitFor(t, camviewtest.Timeout, "offer for a live session without its key ignored")

	if n := strings.Count(cam.Log.Text(), "bye ignored"); n != 2 {
		t.Errorf("the camera logged %d ignored byes, want 2", n)
	}
	if strings.Contains(cam.Log.Text(), "webrtc: session ended") {
		t.Fatal("mallory's messages ended alice's session")
	}
	v.WaitFrames(t, 60) // still streaming
	select {
	case bye := <-alice.Ended(o.Session):
		t.Fatalf("alice's session ended: %v", bye)
	default:
	}
	for len(seen) > 0 {
		if m := <-seen; m.SessionID() == session {
			t.Fatalf("the camera answered mallory's messages: %v", m)
		}
	}

	// alice, with the key, still can.
	if err := alice.Hangup(timeout(t), cam.ID, o.Session); err != nil {
		t.Fatal(err)
	}
	cam.Log.WaitFor(t, camviewtest.Timeout, "webrtc: session ended", "reason=hangup")
}

func TestDialRefusesAnIdentityThatIsNotAViewer(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	cert, err := cam.Fleet.OperatorCertificate()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := certs.BrokerHost(cam.URL)
	_, err = relay.Dial(timeout(t), relay.Config{
		BrokerURL: cam.URL, ClientID: "operator:admin",
		TLS: certs.ClientTLSConfig(cam.Fleet.Pool, host, certs.NewHolder(cert)),
	})
	if err == nil {
		t.Fatal("a relay dialled as an operator")
	}
}

// The camera seals its answer, so the egress guard on its MQTT client cannot see into it: the
// guard checks the answer before it is sealed, and an answer that would carry a protected
// value is not sent (P2).
func TestTheEgressGuardSeesTheAnswerBeforeItIsSealed(t *testing.T) {
	guard := egress.New()
	// A value the answer is sure to hold: its loopback candidates' address.
	guard.Set(egress.KindNickname, "127.0.0.1")
	cam := camviewtest.Start(t, camviewtest.Options{Guard: guard})
	r := cam.Relay(t, "test")
	_, err := offerVia(r, timeout(t), cam.ID, offer(t, pionOffer(t), cam.Grant(t, nil)))
	if !errors.Is(err, relay.ErrEnded) || !strings.Contains(err.Error(), string(signal.ByeFailed)) {
		t.Fatalf("Offer = %v, want the session ended (failed) unanswered", err)
	}
	cam.Log.WaitFor(t, camviewtest.Timeout, "the answer would carry a protected value; not sent")
	if guard.Refusals() == 0 {
		t.Fatal("the guard refused nothing")
	}
}
