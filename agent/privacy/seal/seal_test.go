package seal

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testSecret returns a fixed secret, so that tests are deterministic where they can be.
func testSecret(t testing.TB, fill byte) *Secret {
	t.Helper()
	s, err := NewSecret(bytes.Repeat([]byte{fill}, SecretSize))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpensWhatItSealed(t *testing.T) {
	s := testSecret(t, 1)
	for _, pt := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("settings"), 1000)} {
		sealed := s.Seal("settings", pt)
		if len(sealed) != len(pt)+Overhead {
			t.Fatalf("sealed %d bytes into %d, want %d", len(pt), len(sealed), len(pt)+Overhead)
		}
		if sealed[0] != Version {
			t.Fatalf("version byte %d", sealed[0])
		}
		got, err := s.Open("settings", sealed)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pt) {
			t.Fatalf("opened %q, want %q", got, pt)
		}
	}
}

func TestSealUsesAFreshNonceEachTime(t *testing.T) {
	s := testSecret(t, 1)
	a, b := s.Seal("p", []byte("same")), s.Seal("p", []byte("same"))
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are identical")
	}
}

func TestOpenRefusesAnyFlippedBit(t *testing.T) {
	s := testSecret(t, 1)
	sealed := s.Seal("settings", []byte(`{"ssid":"canary"}`))
	for i := range len(sealed) * 8 {
		c := bytes.Clone(sealed)
		c[i/8] ^= 1 << (i % 8)
		_, err := s.Open("settings", c)
		if i < 8 {
			// The version byte: any change is an unknown version.
			if !errors.Is(err, ErrVersion) {
				t.Fatalf("bit %d: %v, want ErrVersion", i, err)
			}
			continue
		}
		if !errors.Is(err, ErrOpen) {
			t.Fatalf("bit %d flipped: %v, want ErrOpen", i, err)
		}
	}
}

func TestOpenRefusesTruncatedAndEmptyInput(t *testing.T) {
	s := testSecret(t, 1)
	sealed := s.Seal("settings", []byte("hello"))
	for _, n := range []int{0, 1, Overhead - 1, Overhead, len(sealed) - 1} {
		if _, err := s.Open("settings", sealed[:n]); !errors.Is(err, ErrOpen) {
			t.Errorf("%d of %d bytes: %v, want ErrOpen", n, len(sealed), err)
		}
	}
}

func TestOpenRefusesAnotherPurpose(t *testing.T) {
	s := testSecret(t, 1)
	sealed := s.Seal("settings", []byte("hello"))
	for _, p := range []string{"", "Settings", "settings ", "network-tag"} {
		if _, err := s.Open(p, sealed); !errors.Is(err, ErrOpen) {
			t.Errorf("purpose %q: %v, want ErrOpen", p, err)
		}
	}
}

func TestOpenRefusesAnotherDevicesSecret(t *testing.T) {
	sealed := testSecret(t, 1).Seal("settings", []byte("hello"))
	if _, err := testSecret(t, 2).Open("settings", sealed); !errors.Is(err, ErrOpen) {
		t.Fatalf("%v, want ErrOpen", err)
	}
}

func TestNewSecretRefusesAWrongSize(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := NewSecret(make([]byte, n)); !errors.Is(err, ErrBadSecret) {
			t.Errorf("%d bytes: %v, want ErrBadSecret", n, err)
		}
	}
}

func TestSecretNeverPrints(t *testing.T) {
	s := testSecret(t, 'A') // 32 'A's, easy to spot
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "secret", s)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "secret", s)
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		fmt.Fprintf(&buf, f, s)
	}
	if strings.Contains(buf.String(), "AAAA") || strings.Contains(buf.String(), "4141") {
		t.Fatalf("secret printed: %s", buf.String())
	}
}

func TestLoadOrCreateSecretMakesOneSecretAndKeepsIt(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s1, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, SecretFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != SecretSize {
		t.Fatalf("secret file mode %v size %d, want 0600 and %d", fi.Mode().Perm(), fi.Size(), SecretSize)
	}
	di, _ := os.Stat(dir)
	if di.Mode().Perm() != 0o700 {
		t.Fatalf("state dir mode %v, want 0700", di.Mode().Perm())
	}
	s2, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s1.key != s2.key {
		t.Fatal("a second LoadOrCreateSecret made a new secret")
	}
	if got, err := s2.Open("p", s1.Seal("p", []byte("x"))); err != nil || string(got) != "x" {
		t.Fatalf("sealed data does not survive a reload: %q %v", got, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("state dir holds %d entries, want only %s", len(ents), SecretFile)
	}
}

func TestConcurrentCreatorsAgreeOnOneSecret(t *testing.T) {
	dir := t.TempDir()
	const n = 8
	got := make([]*Secret, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = LoadOrCreateSecret(dir) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got[i].key != got[0].key {
			t.Fatal("racing creators ended up with different secrets")
		}
	}
}

func TestLoadSecretRefusesAnUnsafeFile(t *testing.T) {
	tests := []struct {
		name string
		size int
		mode os.FileMode
		want string
	}{
		{"a group-readable file", SecretSize, 0o640, "mode 0640"},
		{"a world-readable file", SecretSize, 0o604, "mode 0604"},
		{"a group-writable file", SecretSize, 0o620, "mode 0620"},
		{"a short file", SecretSize - 1, 0o600, "31 bytes, want 32"},
		{"a long file", SecretSize + 1, 0o600, "33 bytes, want 32"},
		{"an empty file", 0, 0o600, "0 bytes, want 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, SecretFile)
			if err := os.WriteFile(path, make([]byte, tt.size), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			for _, load := range []func(string) (*Secret, error){LoadSecret, LoadOrCreateSecret} {
				_, err := load(dir)
				if !errors.Is(err, ErrBadSecret) {
					t.Fatalf("%v, want ErrBadSecret", err)
				}
				if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("error %q does not name %s and say %q", err, path, tt.want)
				}
			}
			if b, _ := os.ReadFile(path); len(b) != tt.size {
				t.Fatal("an unusable secret was replaced")
			}
		})
	}
}

func TestLoadSecretRefusesASymlinkAndADirectory(t *testing.T) {
	dir := t.TempDir()
	other := filepath.Join(t.TempDir(), "elsewhere")
	os.WriteFile(other, make([]byte, SecretSize), 0o600)
	if err := os.Symlink(other, filepath.Join(dir, SecretFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret(dir); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("symlink: %v, want ErrBadSecret", err)
	}
	dir2 := t.TempDir()
	os.Mkdir(filepath.Join(dir2, SecretFile), 0o700)
	if _, err := LoadSecret(dir2); !errors.Is(err, ErrBadSecret) {
		t.Fatalf("directory: %v, want ErrBadSecret", err)
	}
}

func TestLoadSecretReportsAMissingSecret(t *testing.T) {
	if _, err := LoadSecret(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%v, want fs.ErrNotExist", err)
	}
}

func TestWriteFileIsPrivateAndReadFileOpensIt(t *testing.T) {
	dir := t.TempDir()
	s := testSecret(t, 3)
	path := filepath.Join(dir, "x.sealed")
	if err := s.WriteFile(path, "x", []byte("canary-plaintext")); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	raw, _ := os.ReadFile(path)
	if bytes.Contains(raw, []byte("canary")) {
		t.Fatal("plaintext visible in the sealed file")
	}
	got, err := s.ReadFile(path, "x")
	if err != nil || string(got) != "canary-plaintext" {
		t.Fatalf("ReadFile = %q, %v", got, err)
	}
	if _, err := s.ReadFile(path, "y"); !errors.Is(err, ErrOpen) {
		t.Fatalf("wrong purpose: %v, want ErrOpen", err)
	}
}
