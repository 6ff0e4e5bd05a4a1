// SPDX-License-Identifier: MIT

// camagent patch: tests of the group commit, run by camagent's make test
// (go test github.com/mochi-mqtt/server/v2/hooks/storage/bolt from camagent's module).

package bolt

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"go.etcd.io/bbolt"
)

func openHook(t *testing.T, path string) *Hook {
	t.Helper()
	h := new(Hook)
	h.SetOpts(slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := h.Init(&Options{Path: path, Options: &bbolt.Options{Timeout: time.Second, NoSync: true}}); err != nil {
		t.Fatal(err)
	}
	return h
}

// txID is the id of the last committed write transaction.
func txID(t *testing.T, db *bbolt.DB) int {
	t.Helper()
	var id int
	if err := db.View(func(tx *bbolt.Tx) error { id = tx.ID(); return nil }); err != nil {
		t.Fatal(err)
	}
	return id
}

// holdWriteLock runs a write transaction that waits for the returned release; the group
// writer's commit waits behind it meanwhile.
func holdWriteLock(t *testing.T, db *bbolt.DB) (release func()) {
	t.Helper()
	held, done := make(chan struct{}), make(chan struct{})
	rel := make(chan struct{})
	go func() {
		defer close(done)
		db.Update(func(*bbolt.Tx) error { close(held); <-rel; return nil })
	}()
	<-held
	return func() { close(rel); <-done }
}

// queued waits until n writes wait in the writer's next batch.
func queued(t *testing.T, w *groupWriter, n int) {
	t.Helper()
	waitWriter(t, w, fmt.Sprintf("%d writes queued", n), func() bool { return w.next != nil && len(w.next.ops) == n })
}

// taken waits until the writer has taken n batches.
func taken(t *testing.T, w *groupWriter, n int) {
	t.Helper()
	waitWriter(t, w, fmt.Sprintf("%d batches taken", n), func() bool { return w.taken == n })
}

// waitWriter polls cond, under the writer's lock, until it holds.
func waitWriter(t *testing.T, w *groupWriter, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		ok := cond()
		w.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 10s for %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

// Writes that arrive while a commit runs share the next transaction, each caller returns once
// its write is committed, and all of them are in the file after the hook stops.
func TestWritesQueuedDuringACommitShareOneTransaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bolt.db")
	h := openHook(t, path)
	before := txID(t, h.db)

	release := holdWriteLock(t, h.db)
	// The first write is taken by the writer, which then waits for the lock; the rest queue.
	first := make(chan error, 1)
	go func() { first <- h.setKv("k-first", &storage.Message{ID: "k-first", Payload: []byte("first")}) }()
	taken(t, h.writer, 1) // it waits for the write lock now
	const n = 200
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ { // this module is go 1.21: no range over ints, a loop variable is shared
		wg.Add(1)
		k := fmt.Sprintf("k-%03d", i)
		go func() {
			defer wg.Done()
			errs <- h.setKv(k, &storage.Message{ID: k, Payload: []byte(k)})
		}()
	}
	queued(t, h.writer, n)
	select {
	case err := <-first:
		t.Fatalf("a write returned (%v) before it was committed", err)
	default:
	}
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The held transaction, the first write's, and one for the other 200.
	if got := txID(t, h.db) - before; got != 3 {
		t.Errorf("%d transactions for %d writes, want 3", got, n+1)
	}
	if err := h.delKv("k-007"); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}

	h = openHook(t, path)
	defer h.Stop()
	var m storage.Message
	if err := h.getKv("k-first", &m); err != nil || string(m.Payload) != "first" {
		t.Fatalf("k-first after reopening: %q, %v", m.Payload, err)
	}
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k-%03d", i)
		var m storage.Message
		err := h.getKv(k, &m)
		if i == 7 {
			if err != ErrKeyNotFound {
				t.Errorf("%s was deleted, but reads %v", k, err)
			}
			continue
		}
		if err != nil || string(m.Payload) != k {
			t.Errorf("%s after reopening: %q, %v", k, m.Payload, err)
		}
	}
}

// A write bbolt refuses (an empty key) fails alone; the others in its batch are committed.
func TestABadWriteFailsAloneInItsBatch(t *testing.T) {
	h := openHook(t, filepath.Join(t.TempDir(), "bolt.db"))
	defer h.Stop()
	release := holdWriteLock(t, h.db)
	blocker := make(chan error, 1)
	go func() { blocker <- h.setKv("k-0", &storage.Message{ID: "k-0"}) }()
	taken(t, h.writer, 1) // it waits for the write lock now

	res := make(map[string]chan error)
	for _, k := range []string{"k-1", "", "k-2"} {
		k, ch := k, make(chan error, 1)
		res[k] = ch
		go func() { ch <- h.setKv(k, &storage.Message{ID: k, Payload: []byte("v")}) }()
		queued(t, h.writer, len(res))
	}
	release()
	if err := <-blocker; err != nil {
		t.Fatal(err)
	}
	if err := <-res[""]; err != bbolt.ErrKeyRequired {
		t.Errorf("empty key: %v, want %v", err, bbolt.ErrKeyRequired)
	}
	for _, k := range []string{"k-1", "k-2"} {
		if err := <-res[k]; err != nil {
			t.Errorf("%s: %v", k, err)
		}
		var m storage.Message
		if err := h.getKv(k, &m); err != nil || string(m.Payload) != "v" {
			t.Errorf("%s: %q, %v", k, m.Payload, err)
		}
	}
}

// After Stop, a write fails at once instead of waiting for a writer that is gone.
func TestAWriteAfterStopFails(t *testing.T) {
	h := openHook(t, filepath.Join(t.TempDir(), "bolt.db"))
	w := h.writer
	if err := h.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := w.write(kvOp{key: []byte("k")}); err != storage.ErrDBFileNotOpen {
		t.Fatalf("write after stop: %v, want %v", err, storage.ErrDBFileNotOpen)
	}
}
