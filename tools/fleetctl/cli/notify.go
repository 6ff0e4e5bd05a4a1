package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"
)

// Env is what main hands the long-running commands (broker, serve) from the process's
// surroundings: the service manager's notification socket and watchdog (sd_notify(3)). The
// zero Env is a process started by hand: no notifications, no watchdog.
type Env struct {
	// Notify sends one state to the service manager, such as "READY=1"; main wires it to
	// github.com/coreos/go-systemd/v22/daemon.SdNotify. Nil: nothing is sent.
	Notify func(state string) error
	// Watchdog is the service manager's watchdog timeout (WATCHDOG_USEC). While the command's
	// own loop makes progress, "WATCHDOG=1" is sent every half of it. Zero: no watchdog.
	Watchdog time.Duration
}

// RunEnv runs one fleetctl command like Run, with env from main.
func RunEnv(ctx context.Context, args []string, stdout, stderr io.Writer, env Env) error {
	return Run(context.WithValue(ctx, envKey{}, env), args, stdout, stderr)
}

type envKey struct{}

// service tells the service manager how a long-running command fares.
type service struct {
	env    Env
	log    *slog.Logger
	failed atomic.Bool // notify is called from several goroutines
}

func newService(ctx context.Context, log *slog.Logger) *service {
	env, _ := ctx.Value(envKey{}).(Env)
	return &service{env: env, log: log}
}

// notify sends state; the first failure is logged, the rest are not.
func (s *service) notify(state string) {
	if s.env.Notify == nil {
		return
	}
	if err := s.env.Notify(state); err != nil && !s.failed.Swap(true) {
		s.log.Warn("could not notify the service manager", "state", state, "err", err)
	}
}

func (s *service) status(format string, args ...any) {
	s.notify("STATUS=" + fmt.Sprintf(format, args...))
}

// watchdog sends WATCHDOG=1 every half of Env.Watchdog while alive, the time of the command's
// last pass through its own loop, is within Env.Watchdog of now: a wedged loop (a registry
// lock never released, a hung disk) gets no ping, and the service manager restarts the
// process. It returns when ctx is done.
func (s *service) watchdog(ctx context.Context, alive func() time.Time) {
	if s.env.Watchdog <= 0 {
		return
	}
	t := time.NewTicker(s.env.Watchdog / 2)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		switch last := alive(); {
		case time.Since(last) < s.env.Watchdog:
			s.notify("WATCHDOG=1")
			if failing {
				failing = false
				s.log.Info("watchdog: the loop makes progress again")
			}
		case !failing:
			failing = true
			s.log.Error("watchdog: the loop made no progress; not pinging the service manager, which restarts this process if it lasts", "last_pass", last.UTC().Format(time.RFC3339))
		}
	}
}
