package cli_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// Ctrl-C in the middle of status --wait stops the watching, not the rollout: the operator
// gets the table as it stood and hears that the rollout goes on, not "context canceled".
func TestStatusWaitInterruptedShowsTheTableAndSaysTheRolloutGoesOn(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1")

	stdout, stderr := newOutput(), newOutput()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- cli.Run(ctx, []string{"status", "--dir", dir, "--broker", url, "--wait", "30m"}, stdout, stderr)
	}()
	stderr.waitFor(t, `\(0/1\)`)
	cancel() // Ctrl-C
	err := <-done
	if err == nil {
		t.Fatal("status --wait stopped by Ctrl-C exited zero")
	}
	for _, w := range []string{"stopped watching", "0 of 1 devices converged", "the rollout goes on", "fleetctl status --dir " + dir} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	if !strings.Contains(stdout.String(), "cam-0001  behind") {
		t.Errorf("no status table after Ctrl-C:\n%s", stdout.String())
	}
}

// What breach and rotate tell the operator to run next must work when copied as printed: a
// status command without --dir reads ./fleet, another fleet or none, from where the operator
// stands.
func TestBreachAndRotateNameTheDirectoryInTheStatusCommandTheyPrint(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	want := "fleetctl status --dir " + dir + " --broker " + url + " --wait 10m"
	if out := mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-1"); !strings.Contains(out, want) {
		t.Errorf("breach does not say %q:\n%s", want, out)
	}
	if out := mustRun(t, "rotate", "--dir", dir, "--broker", url, "--all"); !strings.Contains(out, want) {
		t.Errorf("rotate does not say %q:\n%s", want, out)
	}
}

// An incident id breach cannot use is refused before anything else, naming the flag and what
// it takes, not as "fleet: certs: malformed" once connected to the broker.
func TestBreachRefusesAMalformedIncidentIDNamingTheFlag(t *testing.T) {
	dir, _ := initFleet(t)
	// No broker runs at this address: the id is refused before connecting.
	_, _, err := run(t, "breach", "--dir", dir, "--broker", "mqtts://"+fleettest.FreeAddr(t), "--timeout", "1s", "--incident", "INC 2019/12")
	if err == nil || !strings.Contains(err.Error(), `--incident "INC 2019/12": use letters, digits`) || !strings.Contains(err.Error(), "nothing was published") {
		t.Fatalf("breach --incident 'INC 2019/12': %v", err)
	}
}

// A breach run again with a mistyped incident id is a second rotation wave through the whole
// fleet, not the retry the operator meant: breach says so.
func TestBreachWithAnotherIncidentSoonAfterSaysItStartsAnotherWave(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	mustRun(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-2019-12")
	out, stderr, err := run(t, "breach", "--dir", dir, "--broker", url, "--incident", "INC-2019-21")
	if err != nil || !strings.Contains(out, "epoch 2") {
		t.Fatalf("second breach: %v\n%s%s", err, out, stderr)
	}
	if !strings.Contains(stderr, "the fleet's last breach notice, INC-2019-12, was published") || !strings.Contains(stderr, "INC-2019-21 starts another rotation wave") {
		t.Errorf("breach with another incident id said nothing of the wave it starts:\n%s", stderr)
	}
}

// A second fleetctl serve of one instance name on one fleet directory (the README's `fleetctl
// serve &` while the service already serves) would take the first one's broker session over,
// and be taken over in turn, for as long as both run: it is refused at once, saying why and
// what to do. Another name serves beside it.
func TestServeRefusesASecondInstanceOfTheSameName(t *testing.T) {
	dir, f := initFleet(t)
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	first, _ := start(t, "serve", "--dir", dir, "--broker", url)
	first.waitFor(t, `serving`)

	_, _, err := run(t, "serve", "--dir", dir, "--broker", url)
	if err == nil || !strings.Contains(err.Error(), `already runs on this fleet directory: "default"`) || !strings.Contains(err.Error(), "another --name") {
		t.Fatalf("a second fleetctl serve of the same name: %v", err)
	}
	other, _ := start(t, "serve", "--dir", dir, "--broker", url, "--name", "s2")
	other.waitFor(t, `signer "s2" serving`)
}

// A breach or rotate that cannot reach the broker says why, and that nothing went out: at
// 3 a.m. the operator must know whether the fleet is rotating.
func TestBreachAndRotateWithoutABrokerSayWhyAndThatNothingWasPublished(t *testing.T) {
	dir, _ := initFleet(t)
	url := "mqtts://" + fleettest.FreeAddr(t) // no broker runs there
	for _, args := range [][]string{
		{"breach", "--dir", dir, "--broker", url, "--timeout", "1s", "--incident", "INC-1"},
		{"rotate", "--dir", dir, "--broker", url, "--timeout", "1s", "--all"},
	} {
		_, _, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), "nothing accepts connections there") || !strings.HasSuffix(err.Error(), "nothing was published") {
			t.Errorf("fleetctl %s without a broker: %v", args[0], err)
		}
	}
}

// A ping that gets no answer says which camera, for how long, and where to look next.
func TestPingOfASilentCameraSaysWhatToLookAt(t *testing.T) {
	dir, f := initFleet(t)
	fleettest.Enroll(t, f, "cam-0001")
	url := mqtttest.StartEmbedded(t, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}).URL()
	_, _, err := run(t, "ping", "--dir", dir, "--broker", url, "--device", "cam-0001", "--timeout", "300ms")
	if err == nil || !strings.Contains(err.Error(), "cam-0001 did not answer within 300ms") || !strings.Contains(err.Error(), "fleetctl status --dir "+dir) {
		t.Fatalf("ping of a camera that is off: %v", err)
	}
}

// An enrollment request that is not where --csr says is met with where camagent put it.
func TestEnrollWithoutTheCSRSaysWhereCamagentWroteIt(t *testing.T) {
	dir, _ := initFleet(t)
	_, _, err := run(t, "enroll", "--dir", dir, "--csr", filepath.Join(t.TempDir(), "device.csr"))
	if err == nil || !strings.Contains(err.Error(), "device.csr in the camera's --state directory") {
		t.Fatalf("enroll --csr of a missing file: %v", err)
	}
}
