package whep

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/transport/mqtt"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// Defaults and limits.
const (
	// DefaultAnswerTimeout is how long a POST waits for the camera's answer when
	// Config.AnswerTimeout is zero. A camera answers once its ICE gathering is done, within
	// its gather timeout (5 s by default).
	DefaultAnswerTimeout = 15 * time.Second
	// DefaultMaxSessions caps live sessions and offers waiting for an answer when
	// Config.MaxSessions is zero.
	DefaultMaxSessions = 64
	// MaxOfferSize caps a POST body: the largest SDP a camera accepts (S8).
	MaxOfferSize = signal.MaxSDPSize
	// RetryAfter is the Retry-After, in seconds, of a 503 and a 429.
	RetryAfter = 5
	// MaxPendingPerGrant caps the offers one grant may have waiting for an answer at once;
	// beyond it a POST gets 429. With Config.CheckGrant, grants are genuine, so this keeps one
	// grant (a leaked link, a page reloaded in a loop) from holding every place among
	// MaxSessions while its camera does not answer.
	MaxPendingPerGrant = 2
	// hangupTimeout bounds the Bye of a DELETE and of Close.
	hangupTimeout = 5 * time.Second
	// SessionGrace is how long past its grant's expiry (and certs.ClockSkew) a session is
	// remembered: the camera's Bye for it comes before then, if it comes.
	SessionGrace = 30 * time.Second
	// EndedMemory is how long the handler remembers why the camera ended a session, for the
	// client's GET on its resource: a page that lost its connection asks then. At most
	// Config.MaxSessions ended sessions are remembered; the oldest are forgotten first.
	EndedMemory = 10 * time.Minute
)

// Relay is what the handler needs of a signaling relay; *relay.Relay is one.
type Relay interface {
	// Offer sends an offer to a camera and waits for its answer (or its refusal, as a
	// *relay.RefusedError).
	Offer(ctx context.Context, device string, o signal.Offer, answerKey *signal.AnswerKey) (signal.Answer, error)
	// Hangup ends a session and tells the camera.
	Hangup(ctx context.Context, device, session string) error
	// Ended returns the channel of the camera's Bye for a session, nil for an unknown one.
	Ended(session string) <-chan signal.Bye
	// Forget drops a session the camera ended.
	Forget(session string)
}

var _ Relay = (*relay.Relay)(nil)

// Config configures a Handler.
type Config struct {
	// Relay carries the signaling to the cameras. Required.
	Relay Relay
	// ICEServers are STUN and TURN servers sent to the camera with every offer (a TURN relay
	// for viewers behind symmetric NAT). Nil means none.
	ICEServers []signal.ICEServer
	// AnswerTimeout bounds the wait for a camera's answer; zero means DefaultAnswerTimeout.
	AnswerTimeout time.Duration
	// MaxSessions caps the live sessions and the offers waiting for an answer; beyond it a
	// POST gets 503. Zero means DefaultMaxSessions.
	MaxSessions int
	// CheckGrant, if not nil, checks a POST's grant for its device before the offer takes a
	// place among MaxSessions or anything is sent: the signature against the fleet's grant
	// keys, the device, the scope and the validity (the camera still checks it all, and its
	// epoch). A grant it refuses gets 403. Without it, any client can hold places with made-up
	// grants for AnswerTimeout, by offering to cameras that do not answer. GrantKeys.Check is
	// one.
	CheckGrant func(device string, grant []byte) error
	// Clock bounds sessions: each ends when its grant expires (plus certs.ClockSkew and
	// SessionGrace), as the camera ends it then, even when the camera's Bye never came (it
	// lost power, or the relay was reconnecting). Nil means the system clock.
	Clock clock.Clock
	// Logger receives one line per request outcome (session id, device, status, refusal
	// reason; never grants, SDP or addresses). Nil discards them.
	Logger *slog.Logger
}

// Handler is the WHEP endpoint. Create it with New; Close it to hang up its sessions.
type Handler struct {
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	stop chan struct{} // closed by Close
	wg   sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	pending  int                  // offers waiting for an answer
	perGrant map[[32]byte]int     // the same, by the SHA-256 of their grant
	sessions map[string]*resource // by resource id
	ended    map[string]ending    // sessions the camera ended, by resource id, for GET
}

// ending is why and when a session ended without its client's DELETE.
type ending struct {
	device string
	reason signal.ByeReason
	at     time.Time
}

// resource is one live WHEP session. Its URL is /whep/{device}/{resource id}: the resource id
// is a random id of its own, not the signaling session id, which is no secret (it is logged,
// and every viewer identity reads it on dev/+/up/signal), since DELETE takes no grant.
type resource struct {
	device  string
	session string        // the signaling session id
	gone    chan struct{} // closed when the session is deleted
}

var _ http.Handler = (*Handler)(nil)

// New checks cfg and returns a Handler serving POST /whep/{device},
// DELETE /whep/{device}/{resource}, and GET /whep/{device}/{resource}, which says whether the
// session is live or, for EndedMemory, why the camera ended it.
func New(cfg Config) (*Handler, error) {
	if cfg.Relay == nil {
		return nil, errors.New("whep: Config.Relay is required")
	}
	if cfg.AnswerTimeout < 0 {
		return nil, fmt.Errorf("whep: Config.AnswerTimeout %v is negative", cfg.AnswerTimeout)
	}
	if cfg.AnswerTimeout == 0 {
		cfg.AnswerTimeout = DefaultAnswerTimeout
	}
	if cfg.MaxSessions < 0 {
		return nil, fmt.Errorf("whep: Config.MaxSessions %d is negative", cfg.MaxSessions)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if len(cfg.ICEServers) > signal.MaxICEServers {
		return nil, fmt.Errorf("whep: Config.ICEServers: %d servers, at most %d", len(cfg.ICEServers), signal.MaxICEServers)
	}
	for i, s := range cfg.ICEServers {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("whep: Config.ICEServers[%d]: %w", i, err)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Handler{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), stop: make(chan struct{}), perGrant: map[[32]byte]int{}, sessions: map[string]*resource{}, ended: map[string]ending{}}
	// Other methods get 405 with Allow from the mux: PATCH (trickle ICE, ICE restart) too,
	// which this endpoint does not support.
	h.mux.HandleFunc("POST /whep/{device}", h.post)
	h.mux.HandleFunc("DELETE /whep/{device}/{resource}", h.delete)
	h.mux.HandleFunc("GET /whep/{device}/{resource}", h.status)
	return h, nil
}

// ServeHTTP serves the WHEP endpoint.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Answers carry network addresses: no cache may keep them.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	h.mux.ServeHTTP(w, r)
}

// Pending returns how many offers wait for their camera's answer.
func (h *Handler) Pending() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pending
}

// Sessions returns how many sessions are live.
func (h *Handler) Sessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// Close hangs up every live session (each camera gets a Bye) and waits for the handler's
// goroutines. Later POSTs get 503. It is idempotent and returns the hangups' errors.
func (h *Handler) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	close(h.stop)
	live := h.sessions
	h.sessions = map[string]*resource{}
	h.mu.Unlock()
	h.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), hangupTimeout)
	defer cancel()
	var errs []error
	for _, res := range live {
		if err := h.cfg.Relay.Hangup(ctx, res.device, res.session); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *Handler) post(w http.ResponseWriter, r *http.Request) {
	device := r.PathValue("device")
	if certs.ValidDeviceID(device) != nil {
		h.fail(w, http.StatusNotFound, device, "", "no such camera", "bad device id")
		return
	}
	grant, err := ParseBearer(r.Header.Get("Authorization"))
	if err != nil {
		code := "invalid_request"
		if !errors.Is(err, ErrNoGrant) {
			code = "invalid_token"
		}
		// RFC 6750 §3.
		w.Header().Set("WWW-Authenticate", `Bearer realm="camview", error="`+code+`"`)
		h.fail(w, http.StatusUnauthorized, device, "", "a grant is required: Authorization: Bearer <grant from fleetctl grant>", err.Error())
		return
	}
	if h.cfg.CheckGrant != nil {
		if err := h.cfg.CheckGrant(device, grant); err != nil {
			st, msg := grantRefusal(err, device, grant)
			if st == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="camview", error="invalid_token"`)
			}
			// certs' errors name the field that failed, never the grant's bytes.
			h.fail(w, st, device, "", msg, "grant refused by the relay: "+err.Error())
			return
		}
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/sdp" {
		h.fail(w, http.StatusUnsupportedMediaType, device, "", "the offer must be application/sdp", "content type")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxOfferSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, http.StatusRequestEntityTooLarge, device, "", fmt.Sprintf("the offer is over %d bytes", MaxOfferSize), "offer too large")
			return
		}
		h.fail(w, http.StatusBadRequest, device, "", "could not read the offer", err.Error())
		return
	}
	answerKey := signal.NewAnswerKey()
	o := signal.Offer{V: signal.Version, Session: signal.NewSession(), Key: signal.NewKey(), AnswerKey: answerKey.Public(),
		SDP: string(body), Grant: grant, ICEServers: h.cfg.ICEServers}
	// Encode validates the offer and checks that its message fits the signaling cap: JSON
	// escaping makes some offers under MaxOfferSize too large to send.
	if _, err := signal.Encode(o); err != nil {
		// signal's errors name the field, never its value.
		if errors.Is(err, signal.ErrTooLarge) {
			h.fail(w, http.StatusRequestEntityTooLarge, device, o.Session, "the offer is too large to send to the camera", err.Error())
			return
		}
		h.fail(w, http.StatusBadRequest, device, o.Session, "the offer is not an SDP offer", err.Error())
		return
	}
	// Counted by the grant's signed body, which every spelling of one grant shares: its
	// envelope can be written in many ways that all verify.
	gid, err := certs.GrantDigest(grant)
	if err != nil {
		gid = sha256.Sum256(grant) // the camera refuses it; there is nothing else to count it by
	}
	switch h.reserve(gid) {
	case reservedNoRoom:
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
		h.fail(w, http.StatusServiceUnavailable, device, o.Session, "this viewer relay serves as many viewers as it may (camview serve --max-sessions): try again in a while", "session limit")
		return
	case reservedGrantBusy:
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
		h.fail(w, http.StatusTooManyRequests, device, o.Session, fmt.Sprintf("this grant already has %d offers waiting for an answer", MaxPendingPerGrant), "offers per grant")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.AnswerTimeout)
	answer, err := h.cfg.Relay.Offer(ctx, device, o, answerKey)
	cancel()
	if err != nil {
		h.release(gid)
		if r.Context().Err() != nil {
			// The client went away, or the server is stopping; the relay told the camera.
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
			h.fail(w, http.StatusServiceUnavailable, device, o.Session, "the request ended before the camera answered", "request ended")
			return
		}
		st, msg := statusFor(err)
		if st == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
		}
		h.fail(w, st, device, o.Session, msg, err.Error())
		return
	}
	id, ok := h.add(device, o.Session, grant, gid)
	if !ok {
		// Close ran meanwhile: the session must not outlive the handler.
		hctx, hcancel := context.WithTimeout(context.Background(), hangupTimeout)
		h.cfg.Relay.Hangup(hctx, device, o.Session)
		hcancel()
		w.Header().Set("Retry-After", strconv.Itoa(RetryAfter))
		h.fail(w, http.StatusServiceUnavailable, device, o.Session, "shutting down", "closed")
		return
	}
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", "/whep/"+device+"/"+id)
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, answer.SDP)
	h.log.Info("whep: session started", "session", o.Session, "device", device, "status", http.StatusCreated)
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	device, id := r.PathValue("device"), r.PathValue("resource")
	h.mu.Lock()
	res := h.sessions[id]
	if res == nil || res.device != device {
		h.mu.Unlock()
		h.fail(w, http.StatusNotFound, device, "", "no such session", "unknown session")
		return
	}
	delete(h.sessions, id)
	close(res.gone)
	h.mu.Unlock()
	session := res.session
	ctx, cancel := context.WithTimeout(context.Background(), hangupTimeout)
	defer cancel()
	if err := h.cfg.Relay.Hangup(ctx, device, session); err != nil {
		// The session is gone here; the camera ends its side when ICE consent stops.
		h.log.Warn("whep: bye not sent", "session", session, "device", device, "err", err)
	}
	w.WriteHeader(http.StatusOK)
	h.log.Info("whep: session deleted", "session", session, "device", device, "status", http.StatusOK)
}

// statusFor maps an Offer error to the HTTP status and the text for the client.
func statusFor(err error) (int, string) {
	var refused *relay.RefusedError
	switch {
	case errors.As(err, &refused):
		switch reason := refused.Refusal.Reason; reason {
		case signal.RefuseGrant:
			return http.StatusForbidden, "the camera refused the grant (grant): it is expired, for another camera, from before the camera's last credential rotation, or signed by a key a breach response dropped; ask for a new link (fleetctl grant)"
		case signal.RefusePrivacy:
			return http.StatusForbidden, "the camera is in privacy mode (privacy): it sends no video while it is on"
		case signal.RefuseLimit:
			return http.StatusServiceUnavailable, "the camera serves as many viewers as it can (limit): try again in a while"
		case signal.RefuseBusy:
			return http.StatusServiceUnavailable, "the camera cannot stream now (busy): try again in a few seconds"
		case signal.RefuseBadOffer:
			return http.StatusBadRequest, "the camera cannot answer this offer: it needs to receive H.264 (bad_offer)"
		default:
			return http.StatusForbidden, "the camera refused (" + string(reason) + ")"
		}
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "the camera did not answer in time (is it online?)"
	case errors.Is(err, relay.ErrClosed), errors.Is(err, relay.ErrEnded),
		errors.Is(err, mqtt.ErrNotConnected), errors.Is(err, mqtt.ErrConnectionLost):
		return http.StatusServiceUnavailable, "the camera cannot be reached now: try again in a few seconds"
	default:
		return http.StatusBadGateway, "the offer could not be sent to the camera"
	}
}

// fail writes a plain-text error and logs the outcome. why is for the log only: it must
// carry no grant or SDP.
func (h *Handler) fail(w http.ResponseWriter, status int, device, session, msg, why string) {
	http.Error(w, msg, status)
	h.log.Info("whep: request refused", "session", session, "device", device, "status", status, "reason", why)
}

// reservation is what reserve made of an offer.
type reservation int

const (
	reserved          reservation = iota // counted; release or add it
	reservedNoRoom                       // the handler is full or closed
	reservedGrantBusy                    // the grant has MaxPendingPerGrant offers waiting
)

// reserve counts an offer with grant gid against MaxSessions and MaxPendingPerGrant.
func (h *Handler) reserve(gid [32]byte) reservation {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed || h.pending+len(h.sessions) >= h.cfg.MaxSessions:
		return reservedNoRoom
	case h.perGrant[gid] >= MaxPendingPerGrant:
		return reservedGrantBusy
	}
	h.pending++
	h.perGrant[gid]++
	return reserved
}

// release gives back a reservation; h.mu must not be held.
func (h *Handler) release(gid [32]byte) {
	h.mu.Lock()
	h.unpend(gid)
	h.mu.Unlock()
}

// unpend ends the wait of an offer with grant gid; h.mu must be held.
func (h *Handler) unpend(gid [32]byte) {
	h.pending--
	if h.perGrant[gid]--; h.perGrant[gid] <= 0 {
		delete(h.perGrant, gid)
	}
}

// add turns a reserved offer into a live session, watches for the camera's Bye and for the
// end of the grant, and returns the session's resource id. It returns false when the handler
// was closed meanwhile.
func (h *Handler) add(device, session string, grant []byte, gid [32]byte) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unpend(gid)
	if h.closed {
		return "", false
	}
	id := signal.NewSession() // 16 random bytes, in hex
	res := &resource{device: device, session: session, gone: make(chan struct{})}
	h.sessions[id] = res
	ended := h.cfg.Relay.Ended(session)
	// The camera accepted the grant, so it parses; and it ends the session at its expiry.
	lifetime := certs.MaxGrantLifetime
	if exp, err := certs.GrantExpiryUnverified(grant); err == nil {
		lifetime = exp.Add(certs.ClockSkew + SessionGrace).Sub(h.cfg.Clock.Now())
	}
	expired := h.cfg.Clock.After(lifetime)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		drop := func(reason signal.ByeReason) {
			h.mu.Lock()
			if h.sessions[id] == res {
				delete(h.sessions, id)
				h.remember(id, ending{device: device, reason: reason, at: h.cfg.Clock.Now()})
			}
			h.mu.Unlock()
		}
		select {
		case <-expired:
			// The camera ended it at the grant's expiry; its Bye was lost.
			drop(signal.ByeExpired)
			hctx, cancel := context.WithTimeout(context.Background(), hangupTimeout)
			err := h.cfg.Relay.Hangup(hctx, device, session)
			cancel()
			h.log.Info("whep: the session outlived its grant; forgotten", "session", session, "device", device, "hangup_err", err)
		case bye := <-ended:
			drop(bye.Reason)
			h.cfg.Relay.Forget(session)
			h.log.Info("whep: the camera ended the session", "session", session, "device", device, "reason", bye.Reason)
		case <-res.gone:
		case <-h.stop:
		}
	}()
	return id, true
}

// remember keeps why the session with resource id ended, for EndedMemory, forgetting the
// oldest beyond MaxSessions; h.mu must be held.
func (h *Handler) remember(id string, e ending) {
	for k, old := range h.ended {
		if e.at.Sub(old.at) >= EndedMemory {
			delete(h.ended, k)
		}
	}
	for len(h.ended) >= h.cfg.MaxSessions {
		oldest := ""
		for k, old := range h.ended {
			if oldest == "" || old.at.Before(h.ended[oldest].at) {
				oldest = k
			}
		}
		delete(h.ended, oldest)
	}
	h.ended[id] = e
}

// status answers GET on a session's resource: 200 "live" while it is, 410 Gone with why the
// camera ended it (for EndedMemory), 404 for a session the handler does not know (deleted,
// forgotten, or of a relay that was restarted). A page asks when its connection breaks, to
// tell its viewer why. Like DELETE it takes no grant: the resource id is the secret.
func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	device, id := r.PathValue("device"), r.PathValue("resource")
	h.mu.Lock()
	res, live := h.sessions[id]
	e, ended := h.ended[id]
	if ended && h.cfg.Clock.Now().Sub(e.at) >= EndedMemory {
		delete(h.ended, id)
		ended = false
	}
	h.mu.Unlock()
	switch {
	case live && res.device == device:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "live\n")
	case ended && e.device == device:
		http.Error(w, endedText(e.reason), http.StatusGone)
	default:
		http.Error(w, "no such session", http.StatusNotFound)
	}
}

// endedText explains to a viewer why the camera ended a session, and what to do.
func endedText(reason signal.ByeReason) string {
	switch reason {
	case signal.ByeExpired:
		return "the grant expired, so the camera ended the session (expired): ask for a new link (fleetctl grant)"
	case signal.ByeRevoked:
		return "the camera's credentials were rotated, which voids every grant issued before (revoked): ask for a new link (fleetctl grant)"
	case signal.ByePrivacy:
		return "the camera turned privacy mode on (privacy): it sends no video while it is on"
	case signal.ByeFailed:
		return "the network path to the camera failed (failed): reload the page to try again"
	case signal.ByeShutdown:
		return "the camera is stopping (shutdown): it may be restarting; reload the page in a minute"
	case signal.ByeHangup:
		return "the camera ended the session (hangup)"
	default:
		return "the camera ended the session (" + string(reason) + ")"
	}
}
