package registry

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/strictjson"
)

// Options configures Open.
type Options struct {
	// Logger receives reports of skipped lines and repaired tails; never record contents.
	// Nil discards them.
	Logger *slog.Logger
}

// Registry is an open log. Its methods are safe for concurrent use; reads see every record
// any process appended before the call.
type Registry struct {
	path string
	log  *slog.Logger

	mu     sync.RWMutex // guards everything below; Update holds it for writing throughout
	f      *os.File
	off    int64 // end of the last complete line indexed
	seen   int64 // file size at the last read
	idx    *index
	closed bool
	// revBase is where idx's revocations start in the cursor space of RevocationsFrom: it
	// grows past every cursor handed out whenever the index is rebuilt (a shrunk or compacted
	// log), so an old cursor gets every revocation again rather than missing new ones.
	revBase int
	// gen counts the indexings of the log from its start; an IssueCursor of an earlier one
	// points into a list that no longer exists.
	gen uint64
	// damage describes the first MaxDamageReported lines that are not records; damaged
	// counts them all. last is the time of the last record indexed, which a revocation
	// salvaged from a damaged line without a readable time of its own takes.
	damage  []Damage
	damaged int
	last    time.Time
}

// Open opens (creating it if needed, mode 0600 in a 0700 directory) the log at path and
// indexes it.
func Open(path string, o Options) (*Registry, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if err := atomicfile.EnsurePrivateDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("registry: %w", err)
	}
	r := &Registry{path: path, log: o.Logger, f: f, idx: newIndex(), gen: 1}
	if err := r.readLocked(false); err != nil {
		f.Close()
		return nil, err
	}
	return r, nil
}

// Path returns the log's path.
func (r *Registry) Path() string { return r.path }

// Close closes the log. It is idempotent; later calls of other methods return ErrClosed or
// report nothing.
func (r *Registry) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	if err := r.f.Close(); err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	return nil
}

// Refresh indexes the records other processes appended since the last read. Every read
// method calls it; it is an fstat(2) and a stat(2) of the path when nothing changed (and the
// log does not end in a partial line).
func (r *Registry) Refresh() error {
	r.mu.RLock()
	if r.closed {
		r.mu.RUnlock()
		return ErrClosed
	}
	fi, err := r.f.Stat()
	seen, torn := r.seen, r.seen != r.off
	r.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	pi, err := os.Stat(r.path)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	// With a partial last line seen (a writer busy or dead), the same size does not mean
	// nothing changed: the next writer cuts that line off and may append as many bytes.
	if fi.Size() == seen && !torn && os.SameFile(fi, pi) {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if err := r.reopenIfReplacedLocked(); err != nil {
		return err
	}
	return r.readLocked(false)
}

// reopenIfReplacedLocked opens the log at r.path again if it is no longer the file r.f (Compact
// replaced it) and indexes it from the start; the caller holds r.mu but no flock.
func (r *Registry) reopenIfReplacedLocked() error {
	fi, err := r.f.Stat()
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	pi, err := os.Stat(r.path)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if os.SameFile(fi, pi) {
		return nil
	}
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	r.f.Close()
	r.f = f
	r.resetLocked()
	return r.readLocked(false)
}

// resetLocked empties the index, to be read again from the start of r.f.
func (r *Registry) resetLocked() {
	r.revBase += len(r.idx.revocations)
	r.gen++
	r.idx, r.off, r.seen = newIndex(), 0, 0
	r.damage, r.damaged, r.last = nil, 0, time.Time{}
}

// lockLocked takes the flock of the log that r.path names now, reopening it first if Compact
// replaced the file r.f held; the caller holds r.mu and unlocks with unlockFile(r.f).
func (r *Registry) lockLocked() error {
	for {
		if err := r.reopenIfReplacedLocked(); err != nil {
			return err
		}
		if err := lockFile(r.f); err != nil {
			return fmt.Errorf("registry: lock %s: %w", r.path, err)
		}
		// A compaction may have replaced the file while this process waited for the lock on
		// the old one: its records must go to the new one.
		fi, err1 := r.f.Stat()
		pi, err2 := os.Stat(r.path)
		if err := errors.Join(err1, err2); err != nil {
			unlockFile(r.f)
			return fmt.Errorf("registry: %w", err)
		}
		if os.SameFile(fi, pi) {
			return nil
		}
		unlockFile(r.f)
	}
}

// refresh is Refresh for read methods: a failure is logged and the index as it stands is used.
func (r *Registry) refresh() {
	if err := r.Refresh(); err != nil && !errors.Is(err, ErrClosed) {
		r.log.Error("registry: cannot read the log; answering from what was read before", "path", r.path, "err", err)
	}
}

// readLocked indexes the complete lines after r.off. With repair set (the caller holds the
// file lock, so no writer is mid-line) a partial last line is the remains of a writer that
// died, and is cut off.
func (r *Registry) readLocked(repair bool) error {
	fi, err := r.f.Stat()
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	size := fi.Size()
	if size < r.off {
		r.log.Warn("registry: the log shrank; indexing it again from the start", "path", r.path, "size", size, "indexed", r.off)
		r.resetLocked()
	}
	// Most calls find a line or two written since the last (a signer reads before each
	// transaction): the buffer is no bigger than what is new. ReadBytes reads a longer line
	// all the same.
	br := bufio.NewReaderSize(io.NewSectionReader(r.f, r.off, size-r.off), int(min(64<<10, max(size-r.off, 16))))
	for {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			switch {
			case len(line) > 0 && repair:
				var err error
				if size, err = r.repairTailLocked(line); err != nil {
					return err
				}
			case len(line) > 0:
				// A writer busy with it, or a fault that hit the last newline: until a
				// writer ends the line, what it still revokes is revoked (a revocation a
				// failing writer then takes back stays so in this index: the safe side).
				for _, sv := range salvageRevocations(line) {
					r.idx.apply(&Record{Type: TypeRevoked, Serial: sv.serial, Device: sv.device, Time: sv.time}, r.off, nil)
				}
			}
			break
		}
		if err != nil {
			return fmt.Errorf("registry: read %s: %w", r.path, err)
		}
		r.parseLine(line, r.off)
		r.off += int64(len(line))
	}
	r.seen = size
	return nil
}

// repairTailLocked deals with line, the log's last line, which has no newline, under the file
// lock (no writer is busy with it): the remains of a writer that died, cut off (and kept in the
// archive), unless it is a whole record or still names a revocation, which a fault that hit
// its newline leaves. That line gets its newline back and is indexed. It returns the log's
// size after.
func (r *Registry) repairTailLocked(line []byte) (int64, error) {
	var rec Record
	whole := len(line) < MaxRecordSize && strictjson.Unmarshal(line, &rec) == nil && rec.Validate() == nil
	if whole || len(salvageRevocations(line)) > 0 {
		r.log.Warn("registry: the log's last line lacks its newline; ending it", "path", r.path, "offset", r.off, "bytes", len(line), "whole_record", whole)
		if _, err := r.f.Write([]byte{'\n'}); err != nil {
			return 0, fmt.Errorf("registry: repair %s: %w", r.path, err)
		}
		if err := r.f.Sync(); err != nil {
			return 0, fmt.Errorf("registry: repair %s: %w", r.path, err)
		}
		r.parseLine(append(line, '\n'), r.off)
		r.off += int64(len(line)) + 1
		return r.off, nil
	}
	r.log.Warn("registry: cutting off a record left half-written by a process that died; its bytes go to the archive", "path", r.path, "offset", r.off, "bytes", len(line))
	a, err := openArchive(r.path + ArchiveSuffix)
	if err == nil {
		err = a.write(append(line, '\n'))
		if err == nil {
			err = a.sync()
		}
		a.close()
	}
	if err != nil {
		// The bytes are no record any process committed: losing them loses nothing a writer
		// reported as done.
		r.log.Error("registry: could not keep the half-written record in the archive; cutting it off anyway", "path", r.path, "err", err)
	}
	if err := r.f.Truncate(r.off); err != nil {
		return 0, fmt.Errorf("registry: repair %s: %w", r.path, err)
	}
	return r.off, nil
}

func (r *Registry) parseLine(line []byte, off int64) {
	var rec Record
	err := error(nil)
	if len(line) > MaxRecordSize {
		err = fmt.Errorf("line of %d bytes, cap %d", len(line), MaxRecordSize)
	} else if err = strictjson.Unmarshal(bytes.TrimSuffix(line, []byte("\n")), &rec); err == nil {
		err = rec.Validate()
	}
	if err == nil {
		r.idx.apply(&rec, off, nil)
		r.last = rec.Time
		return
	}
	d := Damage{Offset: off, Err: err.Error()}
	for _, s := range salvageRevocations(line) {
		at := s.time
		if at.IsZero() {
			at = r.last // records are appended in time order, near enough for a CRL
		}
		r.idx.apply(&Record{Type: TypeRevoked, Serial: s.serial, Device: s.device, Time: at}, off, nil)
		d.Revoked = append(d.Revoked, s.serial)
	}
	r.damaged++
	if len(r.damage) < MaxDamageReported {
		r.damage = append(r.damage, d)
	}
	if len(d.Revoked) > 0 {
		r.log.Error("registry: a damaged line of the log still names revoked serials: they stay revoked", "path", r.path, "offset", off, "serials", d.Revoked, "err", err)
		return
	}
	r.log.Error("registry: skipping a damaged line of the log (fleetctl check lists them)", "path", r.path, "offset", off, "err", err)
}

// Damaged returns the lines of the log that are not records (the first MaxDamageReported of
// them, in log order) and how many there are in all. Readers skip them, but for the
// revocations they still name (Damage.Revoked).
func (r *Registry) Damaged() ([]Damage, int) {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Damage, len(r.damage))
	for i, d := range r.damage {
		d.Revoked = append([]string(nil), d.Revoked...)
		out[i] = d
	}
	return out, r.damaged
}

// certificateLocked returns the certificate of e, from memory or from its line in the file.
func (r *Registry) certificateLocked(e *entry) (*x509.Certificate, error) {
	der := e.der
	if der == nil {
		br := bufio.NewReader(io.NewSectionReader(r.f, e.off, MaxRecordSize+1))
		line, err := br.ReadBytes('\n')
		if err != nil {
			return nil, fmt.Errorf("registry: read certificate %s: %w", e.Serial, err)
		}
		var rec Record
		if err := strictjson.Unmarshal(bytes.TrimSuffix(line, []byte("\n")), &rec); err != nil || rec.Serial != e.Serial {
			return nil, fmt.Errorf("registry: certificate %s: the log changed under its index", e.Serial)
		}
		der = rec.Cert
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("registry: certificate %s: %w", e.Serial, err)
	}
	return c, nil
}

// Revoked reports whether serial was revoked. It is meant for broker.Config.Revoked: a
// pair of stat(2) calls and a map lookup, and it sees revocations by other processes at once.
func (r *Registry) Revoked(serial *big.Int) bool {
	if serial == nil {
		return false
	}
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.revoked[SerialHex(serial)]
}

// Revocations returns every revoked serial, in the order they were revoked.
func (r *Registry) Revocations() []Revocation {
	rv, _ := r.RevocationsFrom(0)
	return rv
}

// RevocationsFrom returns the revocations after cursor from (0: all of them), and the cursor
// to pass next time to get only newer ones. After the log was compacted, a cursor from before
// gets every revocation again.
func (r *Registry) RevocationsFrom(from int) ([]Revocation, int) {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.revocationsFrom(from - r.revBase), r.revBase + len(r.idx.revocations)
}

// Cert returns what the log says about the certificate with serial (lower-case hex).
func (r *Registry) Cert(serial string) (Cert, bool) {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.cert(serial)
}

// DeviceCerts returns the certificates issued for device (its own and its bootstrap
// identity's), or for an identity recorded under its name (viewer:, operator: or signer:),
// in issue order.
func (r *Registry) DeviceCerts(device string) []Cert {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.deviceCerts(device)
}

// Devices returns the ids of every device the log has issued a certificate for, sorted.
func (r *Registry) Devices() []string {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.deviceIDs()
}

// Retired reports whether device is retired (TypeRetired, not reinstated since), and since
// when.
func (r *Registry) Retired(device string) (time.Time, bool) {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.idx.retired[device]
	return t, ok
}

// RetiredDevices returns the ids of the devices that are retired, sorted.
func (r *Registry) RetiredDevices() []string {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.retiredDevices()
}

// Outcomes counts the rotation certificates issued at or after since and what became of them
// by now, given confirmTimeout.
func (r *Registry) Outcomes(since, now time.Time, confirmTimeout time.Duration) Outcome {
	r.refresh()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.outcomes(since, now, confirmTimeout)
}

// Update runs fn as one transaction: under an exclusive lock on the log shared with every
// other process, with the index brought up to date first. The records fn appends are written
// with one write and one fsync when fn returns nil, and then the functions fn registered with
// Tx.AfterCommit run, still under the lock. When fn returns an error, or writing fails,
// nothing is written and the index forgets what fn appended. fn must read through tx only:
// the Registry's own methods would wait for the lock fn runs under.
func (r *Registry) Update(fn func(tx *Tx) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if err := r.lockLocked(); err != nil {
		return err
	}
	defer func() {
		if err := unlockFile(r.f); err != nil {
			r.log.Error("registry: unlock", "path", r.path, "err", err)
		}
	}()
	if err := r.readLocked(true); err != nil {
		return err
	}
	tx := &Tx{r: r}
	err := fn(tx)
	tx.done = true
	if err == nil && tx.buf.Len() > 0 {
		err = r.commitLocked(tx)
	}
	if err != nil {
		if tx.buf.Len() > 0 {
			r.rollbackLocked()
		}
		return err
	}
	for _, f := range tx.after {
		f()
	}
	return nil
}

func (r *Registry) commitLocked(tx *Tx) error {
	if _, err := r.f.Write(tx.buf.Bytes()); err != nil {
		r.f.Truncate(r.off) // best effort; the next writer cuts off a partial line anyway
		return fmt.Errorf("registry: append to %s: %w", r.path, err)
	}
	if err := r.f.Sync(); err != nil {
		r.f.Truncate(r.off)
		return fmt.Errorf("registry: fsync %s: %w", r.path, err)
	}
	r.off += int64(tx.buf.Len())
	r.seen = r.off
	for _, e := range tx.added {
		e.der = nil
	}
	return nil
}

// rollbackLocked drops what a failed transaction added to the index by indexing the file
// again; the file holds nothing of it.
func (r *Registry) rollbackLocked() {
	r.resetLocked()
	if err := r.readLocked(true); err != nil {
		r.log.Error("registry: re-reading the log after a failed transaction", "path", r.path, "err", err)
	}
}

// Tx is a transaction of Update. Its reads see the records it appended. It must not be used
// after Update returned.
type Tx struct {
	r     *Registry
	buf   bytes.Buffer
	added []*entry
	after []func()
	done  bool
}

// Append validates rec and adds it to the transaction.
func (tx *Tx) Append(rec Record) error {
	if tx.done {
		return ErrTxDone
	}
	if err := rec.Validate(); err != nil {
		return err
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if bytes.Contains(line, []byte("PRIVATE KEY")) || len(line)+1 > MaxRecordSize {
		return fmt.Errorf("%w: %s record for %s refused", ErrInvalidRecord, rec.Type, rec.Device)
	}
	off := tx.r.off + int64(tx.buf.Len())
	tx.r.last = rec.Time
	tx.buf.Write(line)
	tx.buf.WriteByte('\n')
	var der []byte
	if rec.Type == TypeIssued {
		der = rec.Cert
	}
	tx.r.idx.apply(&rec, off, der)
	if der != nil {
		if e := tx.r.idx.serials[rec.Serial]; e != nil && e.der != nil {
			tx.added = append(tx.added, e)
		}
	}
	return nil
}

// AfterCommit registers f to run once the transaction's records are durable, before the log
// is unlocked: for example to write a CRL that must not be overtaken by another process's.
func (tx *Tx) AfterCommit(f func()) { tx.after = append(tx.after, f) }

// Cert returns what the log says about the certificate with serial.
func (tx *Tx) Cert(serial string) (Cert, bool) { return tx.r.idx.cert(serial) }

// DeviceCerts returns the certificates issued for device (or for an identity recorded under
// its name), in issue order.
func (tx *Tx) DeviceCerts(device string) []Cert { return tx.r.idx.deviceCerts(device) }

// Known reports whether the log holds a device certificate for device, i.e. it was enrolled.
func (tx *Tx) Known(device string) bool { return tx.r.idx.known(device) }

// Retired reports whether device is retired, and since when.
func (tx *Tx) Retired(device string) (time.Time, bool) {
	t, ok := tx.r.idx.retired[device]
	return t, ok
}

// FindRequest returns the device certificate last issued to device for the rotation attempt
// reqID, with the certificate itself.
func (tx *Tx) FindRequest(device, reqID string) (Cert, *x509.Certificate, bool, error) {
	e, ok := tx.r.idx.findRequest(device, reqID)
	if !ok {
		return Cert{}, nil, false, nil
	}
	c, err := tx.r.certificateLocked(e)
	if err != nil {
		return Cert{}, nil, false, err
	}
	return e.Cert, c, true, nil
}

// IssueCursor is a position in the log's list of rotation certificates (Tx.IssuesFrom). The
// zero IssueCursor is before the first.
type IssueCursor struct {
	gen uint64
	n   int
}

// IssuesFrom returns the rotation certificates (ViaCSR, ViaBoot) after cursor from, in log
// order, and the cursor to pass next time. all reports that the list holds every rotation
// certificate of the log rather than those after from: from is the zero cursor, or the log was
// indexed again since it was handed out (a compaction replaced it), so whatever the caller
// derived from the earlier ones must start over.
func (tx *Tx) IssuesFrom(from IssueCursor) (issues []Cert, next IssueCursor, all bool) {
	r := tx.r
	start := from.n
	if all = from.gen != r.gen; all { // the zero cursor's gen is 0, never an indexing's
		start = 0
	}
	return r.idx.issuesFrom(start), IssueCursor{gen: r.gen, n: len(r.idx.issues)}, all
}

// Outcomes is Registry.Outcomes within the transaction.
func (tx *Tx) Outcomes(since, now time.Time, confirmTimeout time.Duration) Outcome {
	return tx.r.idx.outcomes(since, now, confirmTimeout)
}

// Revocations returns every revoked serial, in the order they were revoked.
func (tx *Tx) Revocations() []Revocation { return tx.r.idx.revocationsFrom(0) }
