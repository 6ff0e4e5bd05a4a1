package agent

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/clock/clocktest"
	"github.com/camagent/camagent/internal/logtest"
)

// fixture is an enrolled device state directory and the fleet keys that made it.
type fixture struct {
	dir    string
	ca     *certs.CA
	cmdKey *certs.SigningKey
	root   *certs.SigningKey
}

// enrolled makes a fleet CA, a key set and an enrolled device whose certificate is issued at
// issued, pointing at broker.
func enrolled(t testing.TB, id string, issued time.Time, broker string) *fixture {
	t.Helper()
	ca, err := certs.NewCA("agent test", issued.Add(-time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := certs.NewSigningKey()
	cmdKey, _ := certs.NewSigningKey()
	ks, err := certs.SignKeySet(root, certs.KeySet{Version: 1, CommandKeys: []certs.PublicKey{cmdKey.Public()}, GrantKeys: []certs.PublicKey{cmdKey.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	csrPEM, err := Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := certs.ParseCSR(csrPEM)
	c, err := ca.Issue(certs.IssueRequest{Role: certs.RoleDevice, Name: id, CSR: csr, Now: issued})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(certs.Bundle{V: 1, DeviceID: id, CertPEM: string(certs.EncodeCertPEM(c)), CAPEM: string(certs.EncodeCertPEM(ca.Cert)), RootKey: root.Public().Key, KeySet: ks, Broker: broker})
	if _, err := InstallBundle(dir, b, issued); err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, ca: ca, cmdKey: cmdKey, root: root}
}

// closedPort returns an mqtts URL on loopback where nothing listens.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "mqtts://" + addr
}

func TestEnrollKeepsKeyPrivateAndReusesIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	csr1, err := Enroll(dir, "cam-0001")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, KeyFile): 0o600} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: mode %v, %v; want %v", p, fi.Mode().Perm(), err, want)
		}
	}
	csr2, _ := Enroll(dir, "cam-0001")
	r1, _ := certs.ParseCSR(csr1)
	r2, _ := certs.ParseCSR(csr2)
	if !r1.PublicKey.(*ecdsa.PublicKey).Equal(r2.PublicKey) {
		t.Fatal("second enroll made a new key")
	}
	if strings.Contains(string(csr1), "PRIVATE") {
		t.Fatal("CSR carries a private key")
	}
	if _, err := Enroll(dir, "Bad ID"); err == nil {
		t.Fatal("bad device id accepted")
	}
}

func TestInstallBundleRefusesAnotherDevicesBundle(t *testing.T) {
	now := time.Now()
	a := enrolled(t, "cam-0001", now, "mqtts://127.0.0.1:1")
	b := enrolled(t, "cam-0002", now, "mqtts://127.0.0.1:1")
	bundle, _ := os.ReadFile(filepath.Join(b.dir, BundleFile))
	if _, err := InstallBundle(a.dir, bundle, now); err == nil {
		t.Fatal("installed a bundle for another key")
	}
}

func TestNotEnrolledSaysSo(t *testing.T) {
	_, err := New(Config{StateDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "enroll") {
		t.Fatalf("err = %v", err)
	}
}

// A Raspberry Pi boots with its clock at some old date. The agent must neither exit nor spin:
// it says why it waits, looks again every ClockRetry, and connects once time is right (R5).
func TestClockBehindCertificateWaitsThenConnects(t *testing.T) {
	issued := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := enrolled(t, "cam-0001", issued, closedPort(t))
	clk := clocktest.New(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)) // no RTC
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Clock: clk, Logger: log, ClockRetry: time.Minute, MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	rec.WaitFor(t, 5*time.Second, "device clock is behind", "certificate is not valid before")
	// It waits on the clock, not in a loop: one timer per retry. (Before connecting, the clock
	// wait is the agent's only timer, so each signal of Waiting is one of its retries.)
	waitTimer := func() {
		t.Helper()
		select {
		case <-clk.Waiting():
		case <-time.After(5 * time.Second):
			t.Fatal("the agent set no timer to look at the clock again")
		}
	}
	waitTimer()
	select {
	case err := <-done:
		t.Fatalf("Run returned while the clock was behind: %v", err)
	default:
	}
	clk.Advance(time.Minute)
	waitTimer() // still behind: it looked again, said so again, and set the next timer
	if n := strings.Count(rec.Text(), "device clock is behind"); n != 2 {
		t.Fatalf("%d warnings for two looks at the clock; log:\n%s", n, rec.Text())
	}
	clk.Set(issued.Add(time.Hour)) // NTP arrived
	rec.WaitFor(t, 10*time.Second, "cannot connect to broker")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestClockBehindPersistedFloorWaits(t *testing.T) {
	issued := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := enrolled(t, "cam-0001", issued, closedPort(t))
	st := state.NewFileStore(filepath.Join(f.dir, StateFile), nil)
	if err := st.Save(state.State{TimeFloor: issued.Add(48 * time.Hour).Unix()}); err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(issued.Add(time.Hour)) // after NotBefore, before the floor
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Clock: clk, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	rec.WaitFor(t, 5*time.Second, "device clock is behind", "persisted time floor")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCorruptStateIsQuarantinedAndReplayIsStillRefused(t *testing.T) {
	now := time.Now()
	f := enrolled(t, "cam-0001", now, closedPort(t))
	if err := os.WriteFile(filepath.Join(f.dir, StateFile), []byte("{\x00garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatalf("corrupt state stopped the agent: %v", err)
	}
	rec.WaitFor(t, time.Second, "state file was corrupt")
	m, _ := filepath.Glob(filepath.Join(f.dir, StateFile+".corrupt-*"))
	if len(m) != 1 {
		t.Fatalf("quarantined files: %v", m)
	}
	// A command sequenced before the recovery can no longer be accepted.
	old, _ := certs.SignCommand(f.cmdKey, certs.Command{Type: "ping", Target: "cam-0001", Seq: uint64(now.Add(-time.Second).UnixNano()), IssuedAt: now.Unix(), ExpiresAt: now.Add(time.Minute).Unix()})
	a.handleCommand(context.Background(), "dev/cam-0001/down/cmd", old)
	if a.cmdsRejected.Load() != 1 || a.cmdsOK.Load() != 0 {
		t.Fatalf("ok=%d rejected=%d", a.cmdsOK.Load(), a.cmdsRejected.Load())
	}
	// And a new agent on the same directory starts cleanly: no crash loop.
	if _, err := New(Config{StateDir: f.dir, Logger: log}); err != nil {
		t.Fatal(err)
	}
}

// Every state write carries the time floor, and a connect writes it only when it lags the
// clock by timeFloorSlack: a rotation's reconnection, seconds after its journal writes, makes
// no extra write.
func TestTheTimeFloorRidesOnStateWrites(t *testing.T) {
	issued := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := enrolled(t, "cam-0001", issued, closedPort(t))
	clk := clocktest.New(issued.Add(time.Hour))
	a, err := New(Config{StateDir: f.dir, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	stored := func() int64 {
		t.Helper()
		st, err := state.NewFileStore(filepath.Join(f.dir, StateFile), nil).Load()
		if err != nil {
			t.Fatal(err)
		}
		return st.TimeFloor
	}
	if err := a.save(func(st *state.State) { st.DesiredEpoch = 1 }); err != nil {
		t.Fatal(err)
	}
	if got, want := stored(), clk.Now().Unix(); got != want {
		t.Fatalf("floor after a state write %d, want the clock %d", got, want)
	}
	written := clk.Now().Unix()
	clk.Advance(timeFloorSlack - time.Second)
	a.raiseTimeFloor() // a connect soon after
	if got := stored(); got != written {
		t.Fatalf("floor %d rewritten %s after the last write", got, timeFloorSlack-time.Second)
	}
	clk.Advance(time.Second)
	a.raiseTimeFloor()
	if got, want := stored(), clk.Now().Unix(); got != want {
		t.Fatalf("floor %d a slack after the last write, want the clock %d", got, want)
	}
}

// A time floor persisted while the clock ran ahead (a wrong RTC, a time set by hand) holds a
// device back only until the system says its clock is synchronised: then the clock wins and
// the floor comes down, instead of the device waiting, unable to connect, for years.
func TestASynchronisedClockLowersAFloorSavedWhileItRanAhead(t *testing.T) {
	issued := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := enrolled(t, "cam-0001", issued, closedPort(t))
	ahead := issued.Add(3 * 365 * 24 * time.Hour)
	st := state.NewFileStore(filepath.Join(f.dir, StateFile), nil)
	if err := st.Save(state.State{TimeFloor: ahead.Unix()}); err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(issued.Add(time.Hour)) // corrected by NTP, three years below the floor
	var synced atomic.Bool
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Clock: clk, Logger: log, ClockRetry: time.Minute, ClockSynchronized: synced.Load,
		MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// Not synchronised: the floor holds.
	rec.WaitFor(t, 5*time.Second, "device clock is behind", "persisted time floor")
	select {
	case <-clk.Waiting():
	case <-time.After(5 * time.Second):
		t.Fatal("the agent set no timer to look at the clock again")
	}
	synced.Store(true)
	clk.Advance(time.Minute)
	rec.WaitFor(t, 10*time.Second, "the persisted time floor is ahead of the clock", "floor_was="+ahead.Format(time.RFC3339))
	rec.WaitFor(t, 10*time.Second, "cannot connect to broker") // it went on to the broker
	got, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if floor := time.Unix(got.TimeFloor, 0); floor.After(clk.Now()) {
		t.Fatalf("persisted floor %s, still after the synchronised clock %s", floor.UTC(), clk.Now().UTC())
	}
}

// A synchronised clock below the certificate's start is not trusted over it: the certificate
// would be refused anyway, so the device waits.
func TestASynchronisedClockStillWaitsForTheCertificate(t *testing.T) {
	issued := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	f := enrolled(t, "cam-0001", issued, closedPort(t))
	clk := clocktest.New(issued.Add(-24 * time.Hour))
	log, rec := logtest.New()
	a, err := New(Config{StateDir: f.dir, Clock: clk, Logger: log, ClockRetry: time.Minute, ClockSynchronized: func() bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	rec.WaitFor(t, 5*time.Second, "device clock is behind", "certificate is not valid before")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if strings.Contains(rec.Text(), "the persisted time floor is ahead") {
		t.Fatal("the floor was lowered below the certificate's start")
	}
}
