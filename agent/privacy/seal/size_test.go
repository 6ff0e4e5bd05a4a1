package seal

import (
	"bytes"
	"path/filepath"
	"testing"
)

// WriteFile must not write what ReadFile refuses to read: a plaintext too large for
// MaxFileSize once sealed would replace a good file with one that never opens again.
func TestWriteFileRefusesWhatReadFileCouldNotRead(t *testing.T) {
	dir := t.TempDir()
	s := testSecret(t, 5)
	path := filepath.Join(dir, "x.sealed")
	largest := bytes.Repeat([]byte{'a'}, MaxFileSize-Overhead)
	if err := s.WriteFile(path, "x", largest); err != nil {
		t.Fatalf("the largest plaintext that fits is refused: %v", err)
	}
	if got, err := s.ReadFile(path, "x"); err != nil || !bytes.Equal(got, largest) {
		t.Fatalf("the largest plaintext that fits does not read back: %v", err)
	}
	if err := s.WriteFile(path, "x", append(largest, 'b')); err == nil {
		t.Fatal("WriteFile accepted a plaintext that ReadFile cannot read back")
	}
	if got, err := s.ReadFile(path, "x"); err != nil || !bytes.Equal(got, largest) {
		t.Fatalf("the refused write replaced the file: %v", err)
	}
}
