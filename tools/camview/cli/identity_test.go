package cli_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/tools/camview/camviewtest"
	"github.com/camagent/camagent/tools/camview/cli"
	fleetcli "github.com/camagent/camagent/tools/fleetctl/cli"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
)

// enrollRelay gives a relay an identity of its own in a directory of its own, the way an
// operator would: camview enroll --name, fleetctl viewer --csr, camview enroll --bundle.
func enrollRelay(t *testing.T, fleetDir, name string) string {
	t.Helper()
	idDir := filepath.Join(t.TempDir(), "relay")
	stdout, stderr, err := run(t, "enroll", "--identity", idDir, "--name", name)
	if err != nil {
		t.Fatalf("camview enroll --name: %v\n%s", err, stderr)
	}
	if !strings.Contains(stdout, "fleetctl viewer --csr") {
		t.Errorf("enroll does not say what comes next:\n%s", stdout)
	}
	bundle := filepath.Join(t.TempDir(), "viewer.bundle.json")
	var out, errb strings.Builder
	if err := fleetcli.Run(t.Context(), []string{"viewer", "--dir", fleetDir, "--csr", filepath.Join(idDir, "viewer.csr"), "--out", bundle}, &out, &errb); err != nil {
		t.Fatalf("fleetctl viewer: %v\n%s", err, errb.String())
	}
	if _, stderr, err := run(t, "enroll", "--identity", idDir, "--bundle", bundle); err != nil {
		t.Fatalf("camview enroll --bundle: %v\n%s", err, stderr)
	}
	return idDir
}

func TestRecordWithAnIdentityOfItsOwnNeedsNoFleetDirectory(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	idDir := enrollRelay(t, cam.Fleet.Dir, "cloud")
	entries, err := os.ReadDir(idDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"viewer.csr", "viewer.json", "viewer.key"}; !slices.Equal(names, want) {
		t.Errorf("identity directory holds %v, want %v: the relay's own key and public parts only", names, want)
	}
	if fi, _ := os.Stat(idDir); fi.Mode().Perm() != 0o700 {
		t.Errorf("identity directory is %v, want 0700", fi.Mode().Perm())
	}
	if fi, _ := os.Stat(filepath.Join(idDir, "viewer.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("viewer key is %v, want 0600", fi.Mode().Perm())
	}
	if _, err := os.Stat(filepath.Join(cam.Fleet.Dir, "viewer", "cloud.key")); !os.IsNotExist(err) {
		t.Errorf("the fleet directory holds a key for viewer:cloud: %v", err)
	}

	out := filepath.Join(t.TempDir(), "cam.h264")
	// No --fleet: the default ./fleet does not exist in the test's working directory either.
	stdout, stderr, err := run(t, "record", "--identity", idDir, "--broker", cam.URL,
		"--device", cam.ID, "--grant-file", grantFile(t, cam.Grant(t, nil)), "--seconds", "1", "--out", out, "--loopback")
	if err != nil {
		t.Fatalf("record with --identity: %v\n%s", err, stderr)
	}
	if m := figureRe.FindStringSubmatch(stdout); m == nil || m[6] != "0" {
		t.Fatalf("figures not printed as expected:\n%s", stdout)
	}
	if fi, err := os.Stat(out); err != nil || fi.Size() == 0 {
		t.Fatalf("no recording: %v", err)
	}
}

func TestIdentityRefusals(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	idDir := enrollRelay(t, cam.Fleet.Dir, "cloud")
	keyOnly := filepath.Join(t.TempDir(), "pending")
	if _, _, err := run(t, "enroll", "--identity", keyOnly, "--name", "pending"); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if _, _, err := run(t, "enroll", "--identity", other, "--name", "other"); err != nil {
		t.Fatal(err)
	}
	// A bundle issued for another relay's key.
	foreign := filepath.Join(t.TempDir(), "foreign.json")
	var out, errb strings.Builder
	if err := fleetcli.Run(t.Context(), []string{"viewer", "--dir", cam.Fleet.Dir, "--csr", filepath.Join(other, "viewer.csr"), "--out", foreign}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	rec := func(extra ...string) []string {
		return append([]string{"record", "--broker", cam.URL, "--device", cam.ID, "--grant", "AAAA", "--out", filepath.Join(t.TempDir(), "x.h264")}, extra...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"--identity and --fleet", rec("--identity", idDir, "--fleet", cam.Fleet.Dir), "not both"},
		{"--name other than the identity's", rec("--identity", idDir, "--name", "web"), `identity in`},
		{"an identity without its bundle", rec("--identity", keyOnly), "fleetctl viewer --csr"},
		{"enroll without --identity", []string{"enroll", "--name", "x"}, "--identity DIR is required"},
		{"enroll with --name and --bundle", []string{"enroll", "--identity", keyOnly, "--name", "x", "--bundle", foreign}, "not both"},
		{"enroll with neither", []string{"enroll", "--identity", keyOnly}, "give --name"},
		{"a bundle for another key", []string{"enroll", "--identity", keyOnly, "--bundle", foreign}, "not for this viewer's key"},
		{"a bundle where no key was made", []string{"enroll", "--identity", filepath.Join(t.TempDir(), "none"), "--bundle", foreign}, "no viewer key"},
		{"a viewer name that cannot be", []string{"enroll", "--identity", filepath.Join(t.TempDir(), "bad"), "--name", "a/b"}, "viewer name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(keyOnly, "viewer.json")); !os.IsNotExist(err) {
		t.Errorf("a refused bundle was installed: %v", err)
	}
}

// A viewer bundle made before bundles carried the fleet's key set still serves: the relay says
// it cannot check grants, and the camera checks them.
func TestServeWithABundleWithoutAKeySetSaysItCannotCheckGrants(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	idDir := enrollRelay(t, cam.Fleet.Dir, "cloud")
	path := filepath.Join(idDir, "viewer.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var bundle map[string]any
	if err := json.Unmarshal(b, &bundle); err != nil {
		t.Fatal(err)
	}
	if bundle["root"] == nil || bundle["key_set"] == nil {
		t.Fatalf("fleetctl viewer made a bundle without the key set: %s", b)
	}
	delete(bundle, "root")
	delete(bundle, "key_set")
	if b, err = json.Marshal(bundle); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	url, logs := serve(t, "--identity", idDir, "--broker", cam.URL)
	if !strings.Contains(logs.String(), "carries no key set") {
		t.Errorf("serve did not say it cannot check grants:\n%s", logs.String())
	}
	// An expired grant goes to the camera, which refuses it.
	if code, text := whepPost(t, url, cam.ID, cam.ExpiredGrant(t)); code != http.StatusForbidden || !strings.Contains(text, "the camera refused the grant") {
		t.Fatalf("an expired grant: %d: %s; want the camera's refusal", code, text)
	}
}

// whepPost offers a fresh viewer's SDP to camera device through camview serve at url with
// grant, and returns the status and body of the answer.
func whepPost(t *testing.T, url, device string, grant []byte) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url+"/whep/"+device, strings.NewReader(camviewtest.NewViewer(t).SDP))
	req.Header.Set("Content-Type", "application/sdp")
	req.Header.Set("Authorization", "Bearer "+base64.RawURLEncoding.EncodeToString(grant))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	if loc := resp.Header.Get("Location"); resp.StatusCode == http.StatusCreated && loc != "" {
		t.Cleanup(func() {
			req, _ := http.NewRequest(http.MethodDelete, url+loc, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	return resp.StatusCode, string(text)
}

// A breach that puts a new key set in force reaches a running camview serve with an identity
// of its own through the broker: grants of the key it dropped are refused at the relay, grants
// of the new keys go through, with no new viewer bundle. Before, the relay kept its bundle's
// keys: it sent on the dropped key's grants and refused the new keys' until an operator signed
// it a new bundle.
func TestServeWithAnIdentityTakesTheKeySetOfABreach(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	idDir := enrollRelay(t, cam.Fleet.Dir, "cloud")
	url, logs := serve(t, "--identity", idDir, "--broker", cam.URL)
	breachTakenBy(t, cam, url, logs)
}

// A breach that puts a new key set in force reaches a running camview serve --fleet through
// the broker too, even when its fleet directory is a copy the breach did not update (another
// machine's, or a read-only one), and the relay writes nothing into that directory. Before,
// such a relay kept the keys of the set in force when it started: it sent on the dropped key's
// grants and refused the new keys' until it was restarted with a fresh copy.
func TestServeWithAFleetDirectoryTakesTheKeySetOfABreach(t *testing.T) {
	cam := camviewtest.Start(t, camviewtest.Options{})
	dir := copyDir(t, cam.Fleet.Dir)
	url, logs := serve(t, "--fleet", dir, "--broker", cam.URL, "--name", "web")
	inForce, err := os.ReadFile(filepath.Join(dir, "keyset.json"))
	if err != nil {
		t.Fatal(err)
	}
	breachTakenBy(t, cam, url, logs)
	if kept, err := os.ReadFile(filepath.Join(dir, "keyset.json")); err != nil || !bytes.Equal(kept, inForce) {
		t.Errorf("the relay's fleet directory holds another key set after the breach (err %v): the relay must not write there", err)
	}
}

// breachTakenBy checks that camview serve at url (logging to logs), running on cam's broker,
// takes the key set of a breach that drops every grant key of cam's fleet: a grant of a
// dropped key, which went through before, is refused by the relay, and a grant of the new
// keys goes through, without a restart.
func breachTakenBy(t *testing.T, cam *camviewtest.Camera, url string, logs *fleettest.Output) {
	t.Helper()
	before := cam.Agent.GrantEpoch()
	leaked := cam.Grant(t, nil)
	if code, text := whepPost(t, url, cam.ID, leaked); code != http.StatusCreated {
		t.Fatalf("before the breach: %d %s", code, text)
	}
	var drop []string
	for _, k := range cam.Fleet.KeySet().GrantKeys {
		drop = append(drop, "--drop", k.ID)
	}
	path := strings.TrimSpace(fleettest.Run(t, append([]string{"keys", "rotate", "--dir", cam.Fleet.Dir}, drop...)...))
	fleettest.Run(t, "breach", "--dir", cam.Fleet.Dir, "--broker", cam.URL, "--incident", "INC-KEYS", "--keyset", path)
	logs.WaitFor(t, "relay: key set accepted")
	for deadline := time.Now().Add(camviewtest.Timeout); cam.Agent.GrantEpoch() == before; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the camera never took the breach notice")
		}
	}

	code, text := whepPost(t, url, cam.ID, leaked)
	if code != http.StatusForbidden || !strings.Contains(text, "signed by a key the fleet does not trust") || strings.Contains(text, "the camera refused") {
		t.Fatalf("a grant of the dropped key after the breach: %d %s; want the relay's 403", code, text)
	}
	f, err := fleet.Open(cam.Fleet.Dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	fresh, err := f.SignGrant(certs.Grant{Device: cam.ID, Epoch: cam.Agent.GrantEpoch(), Scope: certs.ScopeView, Subject: "after-breach",
		IssuedAt: now.Add(-time.Minute).Unix(), ExpiresAt: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if code, text := whepPost(t, url, cam.ID, fresh); code != http.StatusCreated {
		t.Fatalf("a grant of the new key set after the breach: %d %s", code, text)
	}
}

// copyDir copies the directory tree src, with its files' modes, into a new temporary
// directory, and returns it.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), info.Mode().Perm())
		}
		if !d.Type().IsRegular() {
			return nil // a lock's socket or the like: nothing a reader needs
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// serve runs camview serve with args (and --listen 127.0.0.1:0) until the test ends, and
// returns its base URL once it serves, and its log.
func serve(t *testing.T, args ...string) (string, *fleettest.Output) {
	t.Helper()
	out, logs := &fleettest.Output{}, &fleettest.Output{}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan error, 1)
	go func() {
		finished <- cli.Run(ctx, append(append([]string{"serve"}, args...), "--listen", "127.0.0.1:0"), out, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-finished; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	out.WaitFor(t, "camview: serving http://")
	return regexp.MustCompile(`camview: serving (http://\S+)/`).FindStringSubmatch(out.String())[1], logs
}
