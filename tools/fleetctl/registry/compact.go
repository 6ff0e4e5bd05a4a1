package registry

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/camagent/camagent/certs"
	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/strictjson"
)

// CompactAfter is how long after its certificate expired a certificate's records stay in the
// log: a certificate past its NotAfter is refused for that reason alone, and the CRL leaves it
// out a day after.
const CompactAfter = 30 * 24 * time.Hour

// RevocationKeep is how long a revocation of a serial the log never issued (a certificate made
// before the registry recorded its kind, or one whose issued record a fault damaged) is kept:
// as long as any certificate of the fleet can be valid, which is no longer than the fleet CA
// above it (a bootstrap certificate lives that long). The CRL keeps a serial the log lost as
// long (signer.WriteCRL).
const RevocationKeep = certs.DefaultCAValidity + CompactAfter

// ArchiveSuffix names the file beside the log that Compact appends the records it drops to.
const ArchiveSuffix = ".archive"

// Compacted is what Compact did.
type Compacted struct {
	// Kept and Dropped count the records; Dropped ones went to the archive.
	Kept, Dropped int
}

// Compact rewrites the log without the records of certificates that expired more than
// CompactAfter before now, so the log and every process's index stop growing with the fleet's
// history. It keeps every device's newest certificate whatever its age (the log still knows
// the device), every record of a certificate it keeps, revocations of serials it never issued
// for RevocationKeep, and the retirement records of every device that is retired. The records it drops are appended to the archive beside the log
// (path + ArchiveSuffix) and synced before the log is replaced, so nothing is lost (a crash
// between the two leaves them in both, and the next Compact archives them again). The new log
// replaces the old by rename, under the log's lock; other processes notice on their next read
// or write and index the new file (Refresh, Update). With nothing to drop it writes nothing.
func (r *Registry) Compact(now time.Time) (Compacted, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return Compacted{}, ErrClosed
	}
	if err := r.lockLocked(); err != nil {
		return Compacted{}, err
	}
	old := r.f
	defer func() {
		if err := unlockFile(old); err != nil {
			r.log.Error("registry: unlock", "path", r.path, "err", err)
		}
		if r.f != old {
			old.Close() // replaced below
		}
	}()
	if err := r.readLocked(true); err != nil {
		return Compacted{}, err
	}
	keep := r.idx.compactKeep(now)
	var res Compacted
	var archive *archiveWriter
	defer func() { archive.close() }()
	// Kept lines stream into the new log, dropped ones into the archive, which is synced
	// before the new log replaces the old. Nothing dropped: no new log, no archive write.
	err := atomicfile.WriteFileFrom(r.path, 0o600, func(w io.Writer) error {
		kept := bufio.NewWriterSize(w, 64<<10)
		br := bufio.NewReaderSize(io.NewSectionReader(old, 0, r.off), 64<<10)
		for {
			line, err := br.ReadBytes('\n')
			if errors.Is(err, io.EOF) {
				break // r.off ends at a complete line
			}
			if err != nil {
				return fmt.Errorf("registry: compact %s: %w", r.path, err)
			}
			if keepLine(line, keep, r.idx.retired, now) {
				res.Kept++
				if _, err := kept.Write(line); err != nil {
					return fmt.Errorf("registry: compact %s: %w", r.path, err)
				}
				continue
			}
			res.Dropped++
			if archive == nil {
				if archive, err = openArchive(r.path + ArchiveSuffix); err != nil {
					return fmt.Errorf("registry: compact %s: archive: %w", r.path, err)
				}
			}
			if err := archive.write(line); err != nil {
				return fmt.Errorf("registry: compact %s: archive: %w", r.path, err)
			}
		}
		if res.Dropped == 0 {
			return errNothingDropped
		}
		if err := archive.sync(); err != nil {
			return fmt.Errorf("registry: compact %s: archive: %w", r.path, err)
		}
		if err := kept.Flush(); err != nil {
			return fmt.Errorf("registry: compact %s: %w", r.path, err)
		}
		return nil
	})
	if errors.Is(err, errNothingDropped) {
		return res, nil
	}
	if err != nil {
		return Compacted{}, err
	}
	// This process reads the new log from now on; the old file's lock goes with its close.
	f, err := os.OpenFile(r.path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return Compacted{}, fmt.Errorf("registry: compact %s: %w", r.path, err)
	}
	r.f = f
	r.resetLocked()
	if err := r.readLocked(false); err != nil {
		return Compacted{}, err
	}
	return res, nil
}

// keepLine decides one line of the log. A damaged line (one that is not a record) is dropped
// to the archive, unless it still names a revocation that a record of its own would keep: it
// stays as it is, for readers to salvage again (Damage). The retirement and reinstatement
// records of a device that is retired are all kept, in their order, which still ends retired;
// those of a device that is not are dropped together.
func keepLine(line []byte, keep map[string]bool, retired map[string]time.Time, now time.Time) bool {
	var rec Record
	if len(line) > MaxRecordSize || strictjson.Unmarshal(bytes.TrimSuffix(line, []byte("\n")), &rec) != nil || rec.Validate() != nil {
		for _, s := range salvageRevocations(line) {
			// A revocation of a serial the log never issued, without a readable time, is
			// kept: nothing says it is old.
			_, issued := keep[s.serial]
			if keepRevocation(s.serial, s.time, keep, now) || !issued && s.time.IsZero() {
				return true
			}
		}
		return false
	}
	if rec.Type == TypeRetired || rec.Type == TypeReinstated {
		_, ok := retired[rec.Device]
		return ok
	}
	if rec.Type == TypeRevoked {
		return keepRevocation(rec.Serial, rec.Time, keep, now)
	}
	return keep[rec.Serial]
}

// keepRevocation reports whether Compact keeps the revocation of serial made at: with the
// certificate's records, or, for a serial the log never issued, for RevocationKeep.
func keepRevocation(serial string, at time.Time, keep map[string]bool, now time.Time) bool {
	k, issued := keep[canonicalSerial(serial)]
	if issued {
		return k
	}
	return at.Add(RevocationKeep).After(now)
}

// compactKeep maps every serial the log issued to whether Compact keeps its records.
func (x *index) compactKeep(now time.Time) map[string]bool {
	keep := make(map[string]bool, len(x.serials))
	for serial, e := range x.serials {
		keep[serial] = e.NotAfter.Add(CompactAfter).After(now)
	}
	for _, es := range x.devices {
		for i := len(es) - 1; i >= 0; i-- {
			if es[i].Role == certs.RoleDevice {
				keep[es[i].Serial] = true
				break
			}
		}
	}
	return keep
}

// errNothingDropped stops a compaction that would rewrite the log as it is.
var errNothingDropped = errors.New("registry: nothing to drop")

// archiveWriter appends the dropped records to the archive.
type archiveWriter struct {
	f  *os.File
	bw *bufio.Writer
}

// openArchive opens the archive at path for appending, creating it 0600.
func openArchive(path string) (*archiveWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &archiveWriter{f: f, bw: bufio.NewWriterSize(f, 64<<10)}, nil
}

func (a *archiveWriter) write(line []byte) error {
	_, err := a.bw.Write(line)
	return err
}

// sync makes what was written durable, the archive's directory entry too.
func (a *archiveWriter) sync() error {
	if err := a.bw.Flush(); err != nil {
		return err
	}
	if err := a.f.Sync(); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(a.f.Name()))
}

// close closes the archive; a nil archiveWriter is fine.
func (a *archiveWriter) close() {
	if a != nil {
		a.f.Close()
	}
}
