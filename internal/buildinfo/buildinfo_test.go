package buildinfo

import "testing"

func TestUnstampedBuild(t *testing.T) {
	if Version() != "dev" || !BuildTime().IsZero() {
		t.Fatalf("Version %q BuildTime %v", Version(), BuildTime())
	}
	buildTime = "1700000000"
	defer func() { buildTime = "" }()
	if BuildTime().Unix() != 1700000000 {
		t.Fatal(BuildTime())
	}
	buildTime = "17x"
	if !BuildTime().IsZero() {
		t.Fatal("garbage build time parsed")
	}
}
