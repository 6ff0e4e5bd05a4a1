package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/state"
	"github.com/camagent/camagent/internal/logtest"
)

// Privacy mode the owner turned on survives what leaves nothing of state.json to read: a
// directory in its place, a link to nothing, or the file gone. Before, the rebuilt state had
// privacy mode off and the camera streamed again.
func TestPrivacyModeSurvivesAStateFileMovedAsideWhole(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, p string)
	}{
		{"a directory in its place", func(t *testing.T, p string) {
			must(t, os.Remove(p))
			must(t, os.Mkdir(p, 0o700))
		}},
		{"a link to nothing", func(t *testing.T, p string) {
			must(t, os.Remove(p))
			must(t, os.Symlink(p+".gone", p))
		}},
		{"the file gone", func(t *testing.T, p string) { must(t, os.Remove(p)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
			a, err := New(Config{StateDir: f.dir})
			if err != nil {
				t.Fatal(err)
			}
			if err := a.SetPrivacy(context.Background(), true, "owner"); err != nil {
				t.Fatal(err)
			}
			tc.damage(t, filepath.Join(f.dir, StateFile))
			log, rec := logtest.New()
			b, err := New(Config{StateDir: f.dir, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			if !b.Privacy() {
				t.Fatalf("privacy mode is off after the state file was lost:\n%s", rec.Text())
			}
			c, err := New(Config{StateDir: f.dir})
			if err != nil {
				t.Fatal(err)
			}
			if !c.Privacy() {
				t.Error("privacy mode is off at the start after")
			}
		})
	}
}

// The marker is made before the state says on and removed after it says off: a kill between
// saving "off" and removing the marker leaves privacy mode on at the next start, until it is
// turned off again, which removes the marker. A state that says on without a marker (an agent
// from before it) gets one at start.
func TestThePrivacyMarkerErrsOnTheSafeSide(t *testing.T) {
	f := enrolled(t, "cam-0001", time.Now(), closedPort(t))
	marker := filepath.Join(f.dir, PrivacyMarkerFile)
	a, err := New(Config{StateDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	must(t, a.SetPrivacy(ctx, true, "owner"))
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("privacy mode on, no marker: %v", err)
	}
	must(t, a.SetPrivacy(ctx, false, "owner"))
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatalf("privacy mode off, the marker is still there: %v", err)
	}

	// Killed after saving "off", before removing the marker.
	must(t, os.WriteFile(marker, nil, 0o600))
	log, rec := logtest.New()
	b, err := New(Config{StateDir: f.dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if !b.Privacy() {
		t.Fatal("the marker is there and privacy mode is off")
	}
	rec.WaitFor(t, time.Second, "privacy mode marker present though the state says off")
	must(t, b.SetPrivacy(ctx, false, "owner"))
	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Fatal("turned off again, the marker is still there")
	}
	c, err := New(Config{StateDir: f.dir})
	if err != nil {
		t.Fatal(err)
	}
	if c.Privacy() {
		t.Fatal("privacy mode is on after it was turned off")
	}

	// A state saying on, from an agent without the marker.
	store := state.NewFileStore(filepath.Join(f.dir, StateFile), nil)
	st, err := store.Load()
	if err != nil {
		t.Fatal(err)
	}
	st.Privacy = true
	must(t, store.Save(st))
	if _, err := New(Config{StateDir: f.dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("a state saying on got no marker at start: %v", err)
	}
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
