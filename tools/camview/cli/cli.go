package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/camview/receiver"
	"github.com/camagent/camagent/tools/camview/relay"
	"github.com/camagent/camagent/tools/camview/whep"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

const usage = `usage: camview <command> [flags]

commands:
  serve   serve the camview web page and its WHEP endpoint (POST /whep/<device>)
  record  record one camera's live video to an H.264 file and print its figures
  enroll  make this relay's own key and CSR (--identity DIR --name NAME), or install the
          viewer bundle fleetctl viewer signed for it (--identity DIR --bundle FILE)

serve and record connect to the fleet's broker as a viewer relay identity viewer:<name>,
either of their own (--identity DIR, from camview enroll: the key stays in DIR and nothing
else of the fleet is needed) or from the fleet directory (--fleet, default ./fleet, on the
operator's machine: it holds the fleet's keys). Grants come from 'fleetctl grant --device ID'.
Run 'camview <command> -h' for its flags.
`

// connectTimeout bounds the wait for the broker at start.
const connectTimeout = 30 * time.Second

// Run runs one camview command.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmds := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"serve":  serveCmd,
		"record": recordCmd,
		"enroll": enrollCmd,
	}
	if c, ok := cmds[args[0]]; ok {
		err := c(ctx, args[1:], stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return nil // -h: the flag package printed the command's flags
		}
		return err
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// common are the flags every command takes.
type common struct {
	fs                                      *flag.FlagSet
	fleet, identity, broker, name, logLevel *string
	ice                                     *iceServerFlags
}

func newFlags(name string, stderr io.Writer) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet("camview "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &common{
		fs:       fs,
		fleet:    fs.String("fleet", "fleet", "fleet directory, for a relay on the operator's machine: it issues and keeps viewer:<name>'s key there (the directory holds the fleet's keys; a relay of its own takes --identity)"),
		identity: fs.String("identity", "", "viewer identity directory made by camview enroll: the relay's own key and its viewer bundle; no fleet directory is needed"),
		broker:   fs.String("broker", "", "broker URL (default: the fleet's, or the viewer bundle's)"),
		name:     fs.String("name", "web", "viewer relay name: connects as viewer:<name> (with --identity, the bundle's)"),
		logLevel: fs.String("log-level", "info", "log level: debug, info, warn, error"),
		ice:      &iceServerFlags{},
	}
	fs.Var(c.ice, "ice-server", "STUN or TURN server for the camera (and the recorder): stun:host:port, or turn:host:port?user=U&credential=C[&transport=udp]; repeatable, at most 4")
	return fs, c
}

// logger returns the command's logger, writing text to stderr.
func (c *common) logger(stderr io.Writer) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv})), nil
}

// dial connects the viewer relay: as the identity in --identity, or as viewer:<name> of the
// fleet in --fleet. A newer key set the relay learns from the broker goes to onKeySet, if not
// nil.
func (c *common) dial(ctx context.Context, log *slog.Logger, onKeySet func(*certs.KeySet)) (*relay.Relay, error) {
	set := map[string]bool{}
	c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	dctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	if *c.identity != "" {
		if set["fleet"] {
			return nil, errors.New("give --identity or --fleet, not both")
		}
		id, err := relay.LoadIdentity(*c.identity, time.Now())
		if err != nil {
			return nil, err
		}
		if set["name"] && *c.name != id.Name() {
			return nil, fmt.Errorf("--name %q, but the identity in %s is viewer:%s", *c.name, *c.identity, id.Name())
		}
		return relay.DialIdentity(dctx, id, *c.broker, log, onKeySet)
	}
	f, err := fleet.Open(*c.fleet)
	if err != nil {
		return nil, err
	}
	return relay.DialFleetKeySets(dctx, f, *c.name, *c.broker, log, onKeySet)
}

// grantKeys returns what checks viewers' grants for camview serve before their offers go on:
// the grant keys of the fleet in --fleet (its keyset.json's, or the newer set the relay learnt
// from the broker), or of the identity in --identity (its viewer bundle's, or the newer set the
// relay learnt from the broker), loaded again as whep.GrantKeys says (so a bundle replaced by
// camview enroll, or a set put in force in the fleet directory, is read without a restart). It
// returns nil, after a warning, for a bundle made before bundles carried the fleet's key set:
// offers then reach the cameras unchecked, which check them. learnt, if not nil, returns the
// newest key set the running relay took from the broker (nil if none): it is used when it is
// newer than the one on disk (with --identity, one that could not be written there; with
// --fleet, one put in force in another copy of the fleet directory, or not yet read here).
func (c *common) grantKeys(log *slog.Logger, learnt func() *certs.KeySet) (*whep.GrantKeys, error) {
	newest := func(ks *certs.KeySet) *certs.KeySet {
		if learnt != nil {
			if l := learnt(); l != nil && l.Version > ks.Version {
				return l
			}
		}
		return ks
	}
	if *c.identity == "" {
		dir := *c.fleet
		return whep.NewGrantKeys(func() (*certs.Verifier, error) {
			ks, err := fleet.ReadKeySet(dir)
			if err != nil {
				return nil, err
			}
			return newest(ks).GrantVerifier(), nil
		}, nil, log)
	}
	dir := *c.identity
	load := func() (*certs.Verifier, error) {
		id, err := relay.LoadIdentity(dir, time.Now())
		if err != nil {
			return nil, err
		}
		ks := id.KeySet()
		if ks == nil {
			return nil, errNoKeySet
		}
		return newest(ks).GrantVerifier(), nil
	}
	k, err := whep.NewGrantKeys(load, nil, log)
	if errors.Is(err, errNoKeySet) {
		log.Warn("the viewer bundle carries no key set (it was made before bundles did): offers go to the cameras without the relay checking their grants; have fleetctl viewer sign the relay's CSR again for a bundle with one")
		return nil, nil
	}
	return k, err
}

var errNoKeySet = errors.New("the viewer bundle carries no key set")

// endError is an error of a receiver session told in words for a person, unwrapping to it.
type endError struct {
	text string
	err  error
}

func (e *endError) Error() string { return e.text }
func (e *endError) Unwrap() error { return e.err }

// explainEnd explains why a receiver session ended before its time to the person running
// camview: the camera's reason and what to do, rather than the receiver's error chain.
// flowed says whether video had arrived: a connection that failed before then points at the
// network path, one that failed after at the camera going away.
func explainEnd(err error, flowed bool) error {
	var bye *receiver.ByeError
	switch {
	case errors.As(err, &bye) && bye.Reason == signal.ByeFailed && flowed,
		!errors.As(err, &bye) && errors.Is(err, receiver.ErrICEFailed) && flowed:
		return &endError{"the connection to the camera was lost (did it go offline?): try again once it is back", err}
	case errors.As(err, &bye):
		return &endError{"the camera ended the session: " + byeText(bye.Reason), err}
	case errors.Is(err, receiver.ErrICEFailed):
		return &endError{"the connection to the camera failed: " + noPath, err}
	default:
		return err
	}
}

// noPath says what to do when no network path to the camera was found.
const noPath = "no network path between camview and the camera (ICE or DTLS failed); with a camera on this machine run with --video-loopback, add --loopback; across NATs, give a TURN server with --ice-server"

// byeText explains a camera's Bye to a person.
func byeText(r signal.ByeReason) string {
	switch r {
	case signal.ByeExpired:
		return "expired: the grant expired; get a new one with fleetctl grant"
	case signal.ByeRevoked:
		return "revoked: the camera's credentials were rotated, which voids every grant issued before; get a new one with fleetctl grant"
	case signal.ByePrivacy:
		return "privacy: the camera turned privacy mode on; it sends no video while it is on"
	case signal.ByeFailed:
		return "failed: " + noPath
	case signal.ByeShutdown:
		return "shutdown: the camera is stopping; try again once it is back"
	case signal.ByeHangup:
		return "hangup: the camera ended it"
	default:
		return string(r)
	}
}

// refusalText explains a camera's refusal to a person.
func refusalText(r signal.RefusalReason) string {
	switch r {
	case signal.RefuseGrant:
		return "grant: it is expired, for another camera, from before the camera's last credential rotation, or signed by a key a breach response dropped; get a new one with fleetctl grant"
	case signal.RefuseLimit:
		return "limit: the camera serves as many viewers as it can; try again later"
	case signal.RefusePrivacy:
		return "privacy: the camera is in privacy mode"
	case signal.RefuseBusy:
		return "busy: the camera cannot stream now; try again later"
	case signal.RefuseBadOffer:
		return "bad_offer: the camera cannot answer this offer"
	default:
		return string(r)
	}
}

// iceServerFlags collects repeated --ice-server flags. Set only keeps the values: the flag
// package quotes a value whose Set fails, and a TURN value holds a credential. parse checks
// them once the flags are parsed, with errors that never quote them.
type iceServerFlags struct {
	values  []string
	servers []signal.ICEServer
}

func (f *iceServerFlags) String() string {
	var urls []string
	for _, s := range f.servers {
		urls = append(urls, s.URLs...) // URLs carry no credential: ParseICEServer takes it out
	}
	return strings.Join(urls, ",")
}

func (f *iceServerFlags) Set(v string) error {
	f.values = append(f.values, v)
	return nil
}

// parse parses the values given into servers.
func (f *iceServerFlags) parse() error {
	if len(f.values) > signal.MaxICEServers {
		return fmt.Errorf("--ice-server: %d given, at most %d ICE servers", len(f.values), signal.MaxICEServers)
	}
	f.servers = nil
	for i, v := range f.values {
		s, err := ParseICEServer(v)
		if err != nil {
			return fmt.Errorf("--ice-server #%d: %w", i+1, err)
		}
		f.servers = append(f.servers, s)
	}
	return nil
}
