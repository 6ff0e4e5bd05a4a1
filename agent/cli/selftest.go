package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/certs"
	boardid "github.com/camagent/camagent/device/board"
	"github.com/camagent/camagent/device/camera"
	"github.com/camagent/camagent/device/gpio"
	"github.com/camagent/camagent/device/h264"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/buildinfo"
	"github.com/camagent/camagent/internal/clock"
	"github.com/camagent/camagent/transport/mqtt"
)

// Results of a self-test check. Only fail makes `camagent selftest` exit non-zero.
const (
	resultPass = "pass"
	resultWarn = "warn" // cannot tell, or works with a caveat; says which in the detail
	resultFail = "fail"
	resultSkip = "skip" // not configured on this device
)

// Self-test thresholds.
const (
	// minCertDays is the least certificate lifetime left that passes. The agent renews at
	// two thirds of the lifetime, so a healthy device is far above it.
	minCertDays = 3
	// minFreeBytes is the least free space in the state directory that passes.
	minFreeBytes = 10 << 20
	// defaultSelftestTimeout bounds the broker connection and the wait for video.
	defaultSelftestTimeout = 10 * time.Second
	// defaultPressTimeout bounds the wait for a button press with --interactive.
	defaultPressTimeout = 30 * time.Second
	// ntpTimeout bounds asking timedatectl.
	ntpTimeout = 3 * time.Second
)

// syncedFile is where systemd-timesyncd says the clock is synchronised (systemd-timesyncd(8)).
const syncedFile = "/run/systemd/timesync/synchronized"

// procLocks is where Linux lists the file locks held on the system (proc(5)).
const procLocks = "/proc/locks"

// checkResult is one line of the report.
type checkResult struct {
	Check  string `json:"check"`
	Result string `json:"result"`
	Detail string `json:"detail"`
}

// selftestReport is the whole report, as --json prints it.
type selftestReport struct {
	// OK is true when no check failed (warnings and skips do not count).
	OK      bool          `json:"ok"`
	Version string        `json:"version"`
	Checks  []checkResult `json:"checks"`
}

// ntpState is what the system says about clock synchronisation.
type ntpState struct {
	known  bool   // the system said
	synced bool   // and it said synchronised
	source string // who said: "timedatectl", the synchronized file
}

// selfTest is one run of `camagent selftest`. The fields after opts are seams for tests.
type selfTest struct {
	opts        *runOptions
	timeout     time.Duration
	interactive bool
	pressWait   time.Duration
	prompt      io.Writer // --interactive's instructions

	now   func() time.Time
	ntp   func(ctx context.Context) ntpState
	ident func() (boardid.Identity, error)
	pins  *gpio.Pins  // instead of gpio.Open(opts.pins) when set
	clk   clock.Clock // the button's; nil: the system clock
}

func selftestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runSelftest(ctx, args, stdout, stderr, nil)
}

// runSelftest is `camagent selftest`; tune, if not nil, adjusts the self-test before it runs.
func runSelftest(ctx context.Context, args []string, stdout, stderr io.Writer, tune func(*selfTest)) error {
	var (
		timeout     time.Duration
		interactive bool
		pressWait   time.Duration
		asJSON      bool
	)
	o, err := parseRunArgs("camagent selftest", args, stderr, func(fs *flag.FlagSet) {
		fs.DurationVar(&timeout, "timeout", defaultSelftestTimeout, "how long the broker connection and the first video keyframe may take")
		fs.BoolVar(&interactive, "interactive", false, "also blink the status LED and wait for a press of the reset button (a person at the board)")
		fs.DurationVar(&pressWait, "press-timeout", defaultPressTimeout, "with --interactive: how long to wait for the button press")
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	})
	if err != nil {
		return err
	}
	if timeout <= 0 || pressWait <= 0 {
		return errors.New("selftest: --timeout and --press-timeout must be positive")
	}
	st := &selfTest{
		opts: o, timeout: timeout, interactive: interactive, pressWait: pressWait, prompt: stderr,
		now: time.Now, ntp: systemNTP, ident: boardid.ReadHost,
	}
	if tune != nil {
		tune(st)
	}
	rep := st.run(ctx)
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		writeTable(stdout, rep)
	}
	var failed []string
	for _, c := range rep.Checks {
		if c.Result == resultFail {
			failed = append(failed, c.Check)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("selftest: failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

// writeTable prints the report as a table: CHECK, RESULT, DETAIL, the first two columns
// padded to their widest cell and two spaces, as text/tabwriter would lay them out (which
// costs the binary about 10 KB for this one table).
func writeTable(w io.Writer, rep selftestReport) {
	rows := [][3]string{{"CHECK", "RESULT", "DETAIL"}}
	for _, c := range rep.Checks {
		rows = append(rows, [3]string{c.Check, strings.ToUpper(c.Result), c.Detail})
	}
	var w0, w1 int
	for _, r := range rows {
		w0, w1 = max(w0, len(r[0])), max(w1, len(r[1]))
	}
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s%-*s%s\n", w0+2, r[0], w1+2, r[1], r[2])
	}
	io.WriteString(w, b.String())
}

// run runs every check and returns the report.
func (st *selfTest) run(ctx context.Context) selftestReport {
	creds, credErr := agent.ReadCredentials(st.opts.state)
	holder, held := stateHolder(st.opts.state)
	checks := []checkResult{
		st.checkBoard(),
		st.checkClock(ctx, creds),
		st.checkCredentials(creds, credErr),
		st.checkBroker(ctx, creds),
		st.checkCamera(ctx, holder),
		st.checkStorage(),
	}
	if st.interactive {
		checks = append(checks, st.checkLEDAndButton(ctx))
	}
	if held {
		checks = append([]checkResult{result("agent", resultWarn,
			"%s holds %s: a camagent is running on it; stop it (sudo systemctl stop camagent) and run the self-test again: the agent may have the camera open, and the broker check takes over its MQTT session",
			holder, st.opts.state)}, checks...)
	}
	if c, ok := st.checkConfig(); !ok {
		checks = append([]checkResult{c}, checks...)
	}
	rep := selftestReport{OK: true, Version: buildinfo.Version(), Checks: checks}
	for _, c := range checks {
		if c.Result == resultFail {
			rep.OK = false
		}
	}
	return rep
}

func result(check, res, format string, args ...any) checkResult {
	return checkResult{Check: check, Result: res, Detail: fmt.Sprintf(format, args...)}
}

// checkConfig checks the settings as camagent run does before it starts anything (build):
// the checks below use only some of them, and a value only run refuses would otherwise pass
// here and stop the service at every start. A value that seems to carry a comment after it
// (commentRule) is a warning. The row is in the report only when it fails or warns.
func (st *selfTest) checkConfig() (checkResult, bool) {
	if _, err := st.opts.build(io.Discard); err != nil {
		return configRefused(err), false
	}
	if c := st.opts.commentedValues(); len(c) > 0 {
		var at []string
		for _, e := range c {
			at = append(at, fmt.Sprintf("line %d (%s)", e.Line, e.Key))
		}
		return result("config", resultWarn, "%s: %s: the value holds \" #\", which is part of the value: %s",
			st.opts.config, strings.Join(at, ", "), commentRule), false
	}
	return checkResult{}, true
}

// configRefused is the config row for an error of build. One that is only this user's lack of
// permission is not a setting camagent run refuses: it says as whom to run the self-test.
func configRefused(err error) checkResult {
	if errors.Is(err, fs.ErrPermission) {
		return result("config", resultFail, "cannot read what camagent run reads at start: %v: %s", err, serviceUserHint)
	}
	return result("config", resultFail, "camagent run would refuse these settings and exit: %v", err)
}

// checkBoard names the board. The hardware serial is shown: the report is for the person at
// the board, and never leaves it (device/board). It passes only when the board says what it is
// and has a hardware serial (device tree, /proc/cpuinfo): a board without a model, or with a
// serial derived from /etc/machine-id (which a new SD card image changes), is a warning.
func (st *selfTest) checkBoard() checkResult {
	id, err := st.ident()
	switch {
	case err != nil:
		return result("board", resultWarn, "%s; %v", id.Model, err)
	case id.Model == boardid.Unknown:
		return result("board", resultWarn, "the board does not say what it is (no /proc/device-tree/model, no Model line in /proc/cpuinfo): not a Raspberry Pi, or its device tree is not readable; serial %s (from %s)", id.Serial, id.Source)
	case id.Source == boardid.SourceMachineID:
		return result("board", resultWarn, "%s, no hardware serial (device tree, /proc/cpuinfo): serial %s derived from /etc/machine-id, which changes with the SD card image", id.Model, id.Serial)
	}
	return result("board", resultPass, "%s, serial %s (from %s)", id.Model, id.Serial, id.Source)
}

// checkClock asks the system whether the clock is synchronised, and compares it with every
// floor the agent knows (R5): its persisted time floor, its build time and the certificate's
// start. A clock below a floor fails; a system that cannot say warns rather than guess.
func (st *selfTest) checkClock(ctx context.Context, creds *agent.Credentials) checkResult {
	now := st.now()
	floor, why := buildinfo.BuildTime(), "the agent was built after then"
	if creds != nil {
		if creds.TimeFloor.After(floor) {
			floor, why = creds.TimeFloor, "the agent's persisted time floor: the clock was seen later before"
		}
		if nb := creds.Cert.Leaf.NotBefore; nb.After(floor) {
			floor, why = nb, "the device certificate is not valid before then"
		}
	}
	reads := now.UTC().Format(time.RFC3339)
	if now.Before(floor) {
		return result("clock", resultFail, "the clock reads %s, before %s (%s): let it synchronise (network, NTP) or set it", reads, floor.UTC().Format(time.RFC3339), why)
	}
	ns := st.ntp(ctx)
	switch {
	case ns.known && ns.synced:
		return result("clock", resultPass, "synchronised (%s); reads %s", ns.source, reads)
	case ns.known:
		return result("clock", resultFail, "not synchronised (%s); reads %s: check the network and systemd-timesyncd (timedatectl timesync-status)", ns.source, reads)
	}
	return result("clock", resultWarn, "cannot tell whether it is synchronised (no timedatectl answer, no %s); reads %s, past the agent's time floor", syncedFile, reads)
}

// systemNTP asks timedatectl, then looks for systemd-timesyncd's flag file.
func systemNTP(ctx context.Context) ntpState {
	ctx, cancel := context.WithTimeout(ctx, ntpTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "timedatectl", "show", "--property=NTPSynchronized", "--value").Output()
	if err == nil {
		switch strings.TrimSpace(string(out)) {
		case "yes":
			return ntpState{known: true, synced: true, source: "timedatectl"}
		case "no":
			return ntpState{known: true, source: "timedatectl"}
		}
	}
	if _, err := os.Stat(syncedFile); err == nil {
		return ntpState{known: true, synced: true, source: syncedFile}
	}
	return ntpState{}
}

// checkCredentials checks the certificate the agent presents: it chains to the fleet CA and
// has at least minCertDays left.
func (st *selfTest) checkCredentials(creds *agent.Credentials, err error) checkResult {
	const name = "credentials"
	switch {
	case errors.Is(err, agent.ErrNotEnrolled):
		return result(name, resultFail, "not enrolled: no bundle in %s (camagent enroll)", st.opts.state)
	case errors.Is(err, fs.ErrPermission):
		return result(name, resultFail, "%v: %s", err, serviceUserHint)
	case err != nil:
		return result(name, resultFail, "%v", err)
	}
	c := creds.Cert.Leaf
	if _, err := certs.VerifyClient(c, creds.Pool, c.NotBefore); err != nil {
		return result(name, resultFail, "the device certificate does not chain to the fleet CA: %v", err)
	}
	now := st.now()
	left := c.NotAfter.Sub(now)
	until := c.NotAfter.UTC().Format(time.RFC3339)
	switch {
	case now.Before(c.NotBefore):
		return result(name, resultFail, "the device certificate is valid only from %s (is the clock behind?)", c.NotBefore.UTC().Format(time.RFC3339))
	case left <= 0:
		return result(name, resultFail, "the device certificate expired %s ago (%s); the agent recovers through its bootstrap identity once connected, or enroll again", days(-left), until)
	case left < minCertDays*24*time.Hour:
		return result(name, resultFail, "the device certificate expires in %s (%s), under %d days: the agent should have renewed it; is the signer reachable?", days(left), until, minCertDays)
	}
	return result(name, resultPass, "%s: %s left (until %s), generation %d, serial %s", creds.DeviceID, days(left), until, creds.Generation, c.SerialNumber.Text(16))
}

// serviceUserHint is what to do when the self-test may not read the state directory: the
// service user owns it (0700), and the self-test must run as that user to see what it sees.
const serviceUserHint = "the self-test must run as the service user, who owns the state directory: sudo -u camagent camagent selftest --config /etc/camagent/camagent.conf"

// days writes d in days, or hours under two days.
func days(d time.Duration) string {
	if d < 48*time.Hour {
		return fmt.Sprintf("%.1f hours", d.Hours())
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

// checkBroker connects to the broker over mTLS with the device certificate, as the agent
// would, and disconnects. It takes over the device's MQTT session for that moment (the broker
// allows one connection per client id): a running agent is disconnected and reconnects. It
// acknowledges nothing, so a command the broker delivers meanwhile is redelivered to the agent.
// When the bundle and its copy disagree on the broker's address, it tries the copy's after the
// bundle's, as the agent does, and says which one took the connection.
func (st *selfTest) checkBroker(ctx context.Context, creds *agent.Credentials) checkResult {
	const name = "broker"
	if creds == nil {
		return result(name, resultFail, "no usable credentials to connect with (see the credentials check)")
	}
	url := st.opts.broker
	if url == "" {
		url = creds.Broker
	}
	took, failed := st.dialBroker(ctx, creds, url)
	if st.opts.broker != "" || creds.CopyBroker == "" {
		if failed != "" {
			return result(name, resultFail, "%s: %s", url, failed)
		}
		return result(name, resultPass, "%s: connected over mTLS as %s in %v", url, creds.DeviceID, took)
	}
	if failed == "" {
		return result(name, resultWarn, "%s: connected over mTLS as %s in %v; the bundle's copy names another broker, %s, damaged: the agent writes the copy again from the bundle", url, creds.DeviceID, took, creds.CopyBroker)
	}
	ctook, cfailed := st.dialBroker(ctx, creds, creds.CopyBroker)
	if cfailed != "" {
		return result(name, resultFail, "%s: %s; the bundle's copy names another broker, %s: %s", url, failed, creds.CopyBroker, cfailed)
	}
	return result(name, resultWarn, "%s: connected over mTLS as %s in %v, the broker the bundle's copy names; the bundle's own, %s, damaged: %s; the agent writes the bundle again from its copy", creds.CopyBroker, creds.DeviceID, ctook, url, failed)
}

// dialBroker connects to the broker at url as checkBroker says, and returns how long the
// connection took, or why it failed ("" when it did not).
func (st *selfTest) dialBroker(ctx context.Context, creds *agent.Credentials, url string) (time.Duration, string) {
	if _, err := certs.BrokerHost(url); err != nil {
		return 0, err.Error()
	}
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	failed := make(chan error, 1)
	// ServerName "": the client verifies the broker under url's host.
	conf := certs.ClientTLSConfig(creds.Pool, "", certs.NewHolder(creds.Cert))
	var floor certs.BrokerFloor // as the agent: brokers the device's key set retired are refused
	floor.Set(creds.KeySet)
	conf.VerifyConnection = floor.VerifyConnection
	client, err := mqtt.New(mqtt.Config{
		BrokerURL:    url,
		ClientID:     creds.DeviceID,
		TLS:          conf,
		CleanSession: false, // a clean session would discard the agent's queued commands
		// Hold whatever the broker delivers, unacknowledged, until the connection ends.
		Handler:        func(ctx context.Context, _ mqtt.Message) { <-ctx.Done() },
		ConnectTimeout: st.timeout,
		MinBackoff:     st.timeout,
		MaxBackoff:     st.timeout,
		OnConnectError: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	if err != nil {
		return 0, err.Error()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		client.Run(ctx)
	}()
	defer wg.Wait()
	defer cancel()
	start := time.Now()
	up := make(chan error, 1)
	go func() { up <- client.WaitConnected(ctx) }()
	select {
	case err := <-up:
		if err == nil {
			return time.Since(start).Round(time.Millisecond), ""
		}
		return 0, fmt.Sprintf("timeout: no connection within %v: %s", st.timeout, brokerTimeoutHint)
	case err := <-failed:
		cancel()
		<-up
		return 0, classifyConnectError(err)
	}
}

// brokerTimeoutHint is what a broker connection that timed out may mean.
const brokerTimeoutHint = "something on the path drops the packets (a firewall, a wrong address) or what listens there is not an MQTT broker answering TLS; check the address and port and that the broker runs"

// classifyConnectError names the class of a failed broker connection, for a person: retired
// (the broker's certificate is one the device's key set retired), refused, timeout, dns,
// certificate (the broker refused the device's), tls (the broker's certificate or the
// handshake), or error.
func classifyConnectError(err error) string {
	var (
		dnsErr  *net.DNSError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		alert   tls.AlertError
		netErr  net.Error
	)
	msg := err.Error()
	switch {
	case errors.Is(err, certs.ErrRetiredBroker):
		return "retired: the broker presents a certificate the fleet retired (the device's key set refuses brokers issued before its broker_not_before); the broker needs its new certificate (fleetctl replace broker, then restart it): " + msg
	case errors.Is(err, syscall.ECONNREFUSED) || strings.Contains(msg, "connection refused"):
		return "refused: nothing accepts connections there (broker down, wrong port?): " + msg
	case errors.As(err, &dnsErr) || strings.Contains(msg, "no such host"):
		return "dns: the broker's name does not resolve: " + msg
	case errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) ||
		strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate signed by unknown authority"):
		return "tls: the broker's certificate is not the pinned fleet CA's, or not for this name, or not valid at this clock: " + msg
	case errors.As(err, &alert) && alert >= 42 && alert <= 49,
		strings.Contains(msg, "bad certificate"), strings.Contains(msg, "certificate expired"),
		strings.Contains(msg, "expired certificate"), strings.Contains(msg, "certificate revoked"),
		strings.Contains(msg, "unknown certificate"), strings.Contains(msg, "not Authorized"),
		strings.Contains(msg, "bad user name or password"):
		return "certificate: the broker refused this device's certificate (expired, revoked, or another fleet's): " + msg
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &netErr) && netErr.Timeout()) || strings.Contains(msg, "timeout"):
		return "timeout: " + brokerTimeoutHint + ": " + msg
	case strings.Contains(msg, "tls:") || strings.Contains(msg, "handshake"):
		return "tls: " + msg
	}
	return "error: " + msg
}

// stateHolder reports whether a process holds the state directory's lock (agent.LockState),
// and names it ("process PID"). It only looks, in procLocks, for a lock on the directory's
// LockFile: taking the lock, even for a moment, could make the service's own LockState fail.
// Where procLocks cannot be read it reports no holder.
func stateHolder(dir string) (string, bool) {
	var fst unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, agent.LockFile), &fst); err != nil {
		return "", false
	}
	locks, err := os.ReadFile(procLocks)
	if err != nil {
		return "", false
	}
	// A held lock's line: "1: FLOCK  ADVISORY  WRITE 1234 fe:00:10002626 0 EOF", the device in
	// hex; a waiter's line has "->" after the number.
	file := fmt.Sprintf("%02x:%02x:%d", unix.Major(uint64(fst.Dev)), unix.Minor(uint64(fst.Dev)), fst.Ino)
	for line := range strings.Lines(string(locks)) {
		f := strings.Fields(line)
		if len(f) < 6 || f[1] != "FLOCK" || f[5] != file {
			continue
		}
		if pid, err := strconv.Atoi(f[4]); err == nil && pid > 0 {
			return "process " + f[4], true
		}
		return "another process", true // in another PID namespace
	}
	return "", false
}

// checkCamera runs the configured video source until it has yielded an SPS and a keyframe,
// within the timeout, and reports the stream's size and profile. A profile browsers may not
// decode (anything but Constrained Baseline) is a warning. A failure shows the encoder's last
// line of stderr and the last log line, and, when holder (stateHolder) is not "", that a
// running agent may have the camera open.
func (st *selfTest) checkCamera(ctx context.Context, holder string) checkResult {
	const name = "camera"
	tail := newTailHandler()
	src, err := st.opts.videoSource(slog.New(tail))
	switch {
	case err != nil:
		return result(name, resultFail, "%v", err)
	case src == nil:
		return result(name, resultSkip, "no video-exec or video-file configured")
	}
	what := "video-file " + st.opts.videoFile
	if st.opts.videoExec != "" {
		what = "video-exec " + strings.Fields(st.opts.videoExec)[0]
	}
	ctx, cancel := context.WithTimeout(ctx, st.timeout)
	defer cancel()
	var (
		sps      *h264.SPS
		spsErr   error
		keyframe bool
		frames   int
	)
	start := time.Now()
	var took time.Duration
	runErr := src.Run(ctx, func(f camera.Frame) {
		frames++
		for _, nal := range f.AU.NALs {
			if sps == nil && h264.TypeOf(nal) == h264.NALSPS {
				if sps, spsErr = h264.ParseSPS(nal); spsErr != nil {
					sps = nil
				}
			}
		}
		if f.AU.Keyframe && sps != nil && !keyframe {
			keyframe, took = true, time.Since(start)
			cancel()
		}
	})
	if !keyframe {
		why := fmt.Sprintf("no SPS and keyframe within %v (%d frames)", st.timeout, frames)
		switch {
		case spsErr != nil:
			why = fmt.Sprintf("the SPS does not parse: %v", spsErr)
		case sps != nil:
			why = fmt.Sprintf("an SPS but no keyframe within %v (%d frames): give the encoder a short GOP (rpicam-vid --intra 30)", st.timeout, frames)
		}
		if runErr != nil && !errors.Is(runErr, context.Canceled) && !errors.Is(runErr, context.DeadlineExceeded) {
			why += "; " + runErr.Error()
		}
		if said := tail.encoderSaid(); said != "" {
			why += "; the encoder said: " + said
		}
		if last := tail.text(); last != "" {
			why += "; last log: " + last
		}
		if holder != "" {
			why += "; " + holder + " (a running camagent) holds the state directory and may have the camera open: stop it (sudo systemctl stop camagent) and run the self-test again"
		}
		return result(name, resultFail, "%s: %s", what, why)
	}
	detail := fmt.Sprintf("%s: H.264 %dx%d, %s (profile-level-id %s), first keyframe after %v",
		what, sps.Width, sps.Height, profileName(sps), sps.ProfileLevelID(), took.Round(time.Millisecond))
	if !sps.ConstrainedBaseline() {
		return result(name, resultWarn, "%s; browsers (Debian's Chromium among them) may refuse anything but Constrained Baseline: use --profile baseline", detail)
	}
	return result(name, resultPass, "%s", detail)
}

// profileName names an SPS's profile.
func profileName(s *h264.SPS) string {
	switch {
	case s.ConstrainedBaseline():
		return "Constrained Baseline"
	case s.ProfileIDC == 66:
		return "Baseline"
	case s.ProfileIDC == 77:
		return "Main"
	case s.ProfileIDC == 100:
		return "High"
	}
	return fmt.Sprintf("profile_idc %d", s.ProfileIDC)
}

// checkStorage checks that the state directory takes a write and has free space. The write
// comes first: an SD card the kernel remounted read-only after I/O errors (the classic
// Raspberry Pi failure) still shows its free space.
func (st *selfTest) checkStorage() checkResult {
	const name = "storage"
	dir := st.opts.state
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return result(name, resultFail, "%s: missing: the package makes it at install, and the service at start; is the state setting (or --state) the service's directory?", dir)
		}
		return result(name, resultFail, "%s: %v", dir, writeProblem("statfs", err))
	}
	if err := probeWrite(dir); err != nil {
		return result(name, resultFail, "%s: cannot write a file there: %v", dir, err)
	}
	free := uint64(sfs.Bavail) * uint64(sfs.Bsize)
	mib := float64(free) / (1 << 20)
	if free < minFreeBytes {
		return result(name, resultFail, "%s: %.1f MiB free, under %d MiB", dir, mib, minFreeBytes>>20)
	}
	if n, last := quarantinedStates(dir); n > 0 {
		return result(name, resultWarn, "%s: %.0f MiB free, writable; but the agent found its state file corrupt %d time(s), the last at %s (%s.corrupt-*, kept to look at): this storage changed a file the agent wrote. The agent recovered; check the kernel log for storage errors (dmesg | grep -i mmc) and replace the card if it happens again",
			dir, mib, n, last.UTC().Format(time.RFC3339), agent.StateFile)
	}
	return result(name, resultPass, "%s: %.0f MiB free, writable", dir, mib)
}

// quarantinedStates counts the copies of a corrupt state file the agent quarantined in dir
// (state.FileStore keeps the newest few, named by the time it found each) and returns the
// newest one's time: the sign of storage that changes what was written to it.
func quarantinedStates(dir string) (int, time.Time) {
	prefix := agent.StateFile + ".corrupt-"
	ents, _ := os.ReadDir(dir)
	var n int
	var last time.Time
	for _, e := range ents {
		ns, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		n++
		at := time.Time{}
		if v, err := strconv.ParseInt(ns, 10, 64); err == nil {
			at = time.Unix(0, v)
		} else if fi, err := e.Info(); err == nil {
			at = fi.ModTime()
		}
		if at.After(last) {
			last = at
		}
	}
	return n, last
}

// probeData is what probeWrite writes.
var probeData = []byte("camagent selftest: this file is removed at once; one left behind is removed at the agent's next start\n")

// probeWrite creates a small file in dir, fsyncs it, reads it back and removes it, and says
// which step failed and why (writeProblem). The file is named as atomicfile names its temporary
// files, so one a killed self-test leaves is removed at the agent's next start; probeWrite
// itself removes it whatever happens.
func probeWrite(dir string) (err error) {
	f, err := atomicfile.CreateTemp(dir, "camagent-selftest")
	if err != nil {
		return writeProblem("create", err)
	}
	defer func() {
		f.Close()
		if rerr := os.Remove(f.Name()); rerr != nil && err == nil {
			err = writeProblem("remove", rerr)
		}
	}()
	if _, err := f.Write(probeData); err != nil {
		return writeProblem("write", err)
	}
	if err := f.Sync(); err != nil {
		return writeProblem("fsync", err)
	}
	back := make([]byte, len(probeData)+1)
	n, err := f.ReadAt(back, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return writeProblem("read back", err)
	}
	if !bytes.Equal(back[:n], probeData) {
		return writeProblem("read back", fmt.Errorf("read %d bytes that differ from the %d written", n, len(probeData)))
	}
	return nil
}

// writeProblem names a failed step of probeWrite and what the error means for the device.
func writeProblem(step string, err error) error {
	why := err.Error()
	var pe *os.PathError
	if errors.As(err, &pe) {
		why = pe.Err.Error() // the path is the directory's, already named
	}
	switch {
	case errors.Is(err, syscall.EROFS):
		why = "read-only file system: the kernel remounts an SD card read-only after I/O errors (see dmesg); back up the state directory and replace the card"
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		why = "permission denied: the directory must belong to the service user, and the self-test run as it (sudo -u camagent)"
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		why = "no space left on the device"
	case errors.Is(err, syscall.EIO):
		why = "input/output error: the storage is failing (see dmesg)"
	case errors.Is(err, syscall.ENOTDIR):
		why = "not a directory"
	}
	return fmt.Errorf("%s: %s", step, why)
}

// checkLEDAndButton blinks the status LED and waits for a press of the reset button. A long
// press counts as a press here: the self-test never resets the device.
func (st *selfTest) checkLEDAndButton(ctx context.Context) checkResult {
	const name = "led+button"
	var pins gpio.Pins
	if st.pins != nil {
		pins = *st.pins
	} else {
		var err error
		if pins, err = gpio.Open(st.opts.pins); err != nil {
			return result(name, resultFail, "%v", err)
		}
	}
	switch {
	case pins.NoGPIO != "":
		return result(name, resultFail, "no GPIO: %s", pins.NoGPIO)
	case pins.LED == nil:
		return result(name, resultFail, "no led-pin configured")
	case pins.Button == nil:
		return result(name, resultFail, "no button-pin configured")
	}
	pressed := make(chan struct{}, 1)
	press := func() { poke(pressed) }
	b, err := gpio.NewButton(gpio.ButtonConfig{Pin: pins.Button, OnShortPress: press, OnLongPress: press, Clock: st.clk})
	if err != nil {
		return result(name, resultFail, "%v", err)
	}
	led := gpio.NewLED(gpio.LEDConfig{Pin: pins.LED})
	led.SetState(gpio.Booting)
	ctx, cancel := context.WithTimeout(ctx, st.pressWait)
	defer cancel()
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{led.Run, b.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(ctx)
		}()
	}
	fmt.Fprintf(st.prompt, "selftest: the status LED (%s) blinks fast; press the reset button (%s) briefly within %v\n",
		pins.LED.Name(), pins.Button.Name(), st.pressWait)
	var res checkResult
	select {
	case <-pressed:
		res = result(name, resultPass, "button press seen on %s; the LED on %s blinked (you saw it, or check its wiring)", pins.Button.Name(), pins.LED.Name())
	case <-ctx.Done():
		res = result(name, resultFail, "no button press on %s within %v", pins.Button.Name(), st.pressWait)
	}
	cancel()
	wg.Wait()
	return res
}

// tailHandler keeps the last log record, as text, and the last line of the encoder's stderr
// (the camera package's encoderStderrMsg records), for a failed check's detail.
type tailHandler struct {
	last  *tailLine
	attrs []slog.Attr
}

// encoderStderrMsg is the message with which device/camera logs each line of an encoder's
// stderr, in its "line" attribute.
const encoderStderrMsg = "camera: command stderr"

// tailLine is the lines the handlers derived from one tailHandler share.
type tailLine struct {
	mu      sync.Mutex
	line    string
	encoder string // the last line of the encoder's stderr
}

func newTailHandler() *tailHandler { return &tailHandler{last: &tailLine{}} }

func (h *tailHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *tailHandler) Handle(_ context.Context, r slog.Record) error {
	var b bytes.Buffer
	th := slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
			return slog.Attr{}
		}
		return a
	}})
	if err := th.WithAttrs(h.attrs).Handle(context.Background(), r); err != nil {
		return err
	}
	var said string
	if r.Message == encoderStderrMsg {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "line" {
				said = strings.TrimSpace(a.Value.String())
				return false
			}
			return true
		})
	}
	h.last.mu.Lock()
	h.last.line = strings.TrimSpace(b.String())
	if said != "" {
		h.last.encoder = said
	}
	h.last.mu.Unlock()
	return nil
}

func (h *tailHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &tailHandler{last: h.last, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *tailHandler) WithGroup(string) slog.Handler { return h }

// encoderSaid returns the last line of the encoder's stderr, or "".
func (h *tailHandler) encoderSaid() string {
	h.last.mu.Lock()
	defer h.last.mu.Unlock()
	return h.last.encoder
}

// text returns the last record logged, or "".
func (h *tailHandler) text() string {
	h.last.mu.Lock()
	defer h.last.mu.Unlock()
	return h.last.line
}
