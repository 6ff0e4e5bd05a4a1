package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/camview/web"
	"github.com/camagent/camagent/tools/camview/whep"
)

// shutdownTimeout bounds the graceful shutdown of the HTTP server.
const shutdownTimeout = 5 * time.Second

// serveCmd serves the web page and the WHEP endpoint until ctx ends (SIGINT, SIGTERM), then
// stops taking requests, hangs up every live session and disconnects.
func serveCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("serve", stderr)
	listen := fs.String("listen", "127.0.0.1:8889", "HTTP listen address host:port (plain HTTP: keep it on loopback, or put TLS in front)")
	answerTimeout := fs.Duration("answer-timeout", whep.DefaultAnswerTimeout, "how long a WHEP offer waits for the camera's answer")
	maxSessions := fs.Int("max-sessions", whep.DefaultMaxSessions, "most live sessions (and offers waiting for an answer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := c.ice.parse(); err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	if *answerTimeout <= 0 {
		return fmt.Errorf("serve: --answer-timeout %v must be positive", *answerTimeout)
	}
	if *maxSessions <= 0 {
		return fmt.Errorf("serve: --max-sessions %d must be positive", *maxSessions)
	}
	log, err := c.logger(stderr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	var learnt atomic.Pointer[certs.KeySet] // the newest key set the relay took from the broker
	keys, err := c.grantKeys(log, learnt.Load)
	if err != nil {
		return fmt.Errorf("serve: grant keys: %w", err)
	}
	var check func(string, []byte) error
	var onKeySet func(*certs.KeySet)
	if keys != nil {
		check = keys.Check
		// A breach put a new key set in force: take it at once, so that grants of the keys
		// it dropped are refused from the next offer on.
		onKeySet = func(ks *certs.KeySet) {
			learnt.Store(ks)
			keys.Stale()
		}
	}
	r, err := c.dial(ctx, log, onKeySet)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer r.Close()
	h, err := whep.New(whep.Config{
		Relay: r, ICEServers: c.ice.servers, AnswerTimeout: *answerTimeout, MaxSessions: *maxSessions,
		CheckGrant: check, Logger: log,
	})
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	// Requests see base, which shutdown cancels: an offer still waiting for its camera then
	// ends at once (the camera gets a Bye) instead of holding the shutdown up.
	base, cancelBase := context.WithCancel(context.Background())
	defer cancelBase()
	mux := http.NewServeMux()
	mux.Handle("/whep/", h)
	mux.Handle("/", web.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Fprintf(stdout, "camview: serving http://%s/\n", ln.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	select {
	case err := <-done:
		h.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	cancelBase()
	err = srv.Shutdown(sctx)
	if serr := <-done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	// The server is down: no DELETE can reach the sessions any more, so end them here.
	err = errors.Join(err, h.Close())
	if err != nil {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	fmt.Fprintln(stdout, "camview: stopped")
	return nil
}
