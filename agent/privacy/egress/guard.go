package egress

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
)

// Kind names a kind of sensitive value. It appears in refusals and logs, never the value.
type Kind string

// Kinds the agent registers. Any other non-empty Kind may be used.
const (
	KindSSID       Kind = "ssid"
	KindBSSID      Kind = "bssid" // also matched as aa-bb-.., aabbccddeeff, aabb.ccdd.eeff and raw bytes
	KindPassphrase Kind = "passphrase"
	KindNickname   Kind = "nickname"
	KindEmail      Kind = "email"
	KindAddress    Kind = "address" // an IP address; also matched in its other spellings and as raw bytes
)

// Encoding names how a value was written in a refused payload.
type Encoding string

// Encodings the guard recognises.
const (
	Raw            Encoding = "raw"
	CaseFolded     Encoding = "case-folded"
	Hex            Encoding = "hex"             // lower, upper or mixed case
	Base64         Encoding = "base64"          // standard or URL alphabet, padded or not, any alignment
	JSONEscaped    Encoding = "json-escaped"    // \uXXXX, \/ and the other JSON escapes
	PercentEncoded Encoding = "percent-encoded" // %XX in either case, + for space
)

// Guard holds the device's sensitive values and refuses outbound data that carries any of
// them. The zero Guard holds no values and refuses nothing; New returns one too. A Guard is
// safe for concurrent use: Check and Redact never wait for each other or for Set, and every
// Check that starts after a Set returns sees its values.
//
// A Guard prints as its count of values, never the values.
type Guard struct {
	mu         sync.Mutex // serialises Set and Clear
	m          atomic.Pointer[matcher]
	refusals   atomic.Uint64
	redactions atomic.Uint64
}

var (
	_ fmt.Stringer   = (*Guard)(nil)
	_ slog.LogValuer = (*Guard)(nil)
)

// New returns a Guard with no values.
func New() *Guard { return &Guard{} }

// matcher is an immutable set of needles; Set swaps in a new one.
type matcher struct {
	gen    uint64
	kinds  map[Kind]kindNeedles
	values int
	idx    *index
}

type kindNeedles struct {
	values  int
	needles []needle
}

// Set replaces the values of kind with values, so that re-onboarding or a new BSSID replaces
// the old ones; Set(kind) with no values forgets the kind. Empty strings are ignored. Values
// are kept only in the derived forms matching needs (case-folded, hex, base64 pieces), which
// are as secret as the values themselves.
func (g *Guard) Set(kind Kind, values ...string) {
	var kn kindNeedles
	for _, v := range values {
		if v == "" {
			continue
		}
		kn.values++
		for _, f := range forms(kind, v) {
			kn.needles = append(kn.needles, needles(kind, f)...)
		}
	}
	kn.needles = dedupe(kn.needles)
	g.mu.Lock()
	defer g.mu.Unlock()
	m := &matcher{kinds: map[Kind]kindNeedles{}}
	if old := g.m.Load(); old != nil {
		m.gen = old.gen
		maps.Copy(m.kinds, old.kinds)
	}
	m.gen++
	if kn.values > 0 {
		m.kinds[kind] = kn
	} else {
		delete(m.kinds, kind)
	}
	// Kinds in a fixed order, so that the kind a refusal names does not vary between runs.
	var all []needle
	for _, k := range slices.Sorted(maps.Keys(m.kinds)) {
		m.values += m.kinds[k].values
		all = append(all, m.kinds[k].needles...)
	}
	m.idx = newIndex(all)
	g.m.Store(m)
}

// Clear forgets every value (a factory reset).
func (g *Guard) Clear() {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := &matcher{kinds: map[Kind]kindNeedles{}}
	if old := g.m.Load(); old != nil {
		m.gen = old.gen + 1
	}
	g.m.Store(m)
}

func dedupe(ns []needle) []needle {
	var out []needle
	for _, n := range ns {
		if !slices.ContainsFunc(out, func(o needle) bool {
			return o.bound == n.bound && bytes.Equal(o.s, n.s)
		}) {
			out = append(out, n)
		}
	}
	return out
}

// Len returns how many values the Guard holds.
func (g *Guard) Len() int {
	if m := g.m.Load(); m != nil {
		return m.values
	}
	return 0
}

// generation changes with every Set and Clear.
func (g *Guard) generation() uint64 {
	if m := g.m.Load(); m != nil {
		return m.gen
	}
	return 0
}

// String describes the Guard by its count of values.
func (g *Guard) String() string { return fmt.Sprintf("egress.Guard{values:%d}", g.Len()) }

// LogValue implements slog.LogValuer with the count of values.
func (g *Guard) LogValue() slog.Value { return slog.IntValue(g.Len()) }

// Refusals returns how many payloads Check has refused since the Guard was made.
func (g *Guard) Refusals() uint64 { return g.refusals.Load() }

// Redactions returns how many strings Redact has changed since the Guard was made.
func (g *Guard) Redactions() uint64 { return g.redactions.Load() }

// Check returns nil if payload carries none of the Guard's values, and otherwise a
// *SensitiveError (matching ErrSensitive) naming the kind of value and how it was written,
// counted in Refusals. It looks for every value
//
//   - raw and case-folded;
//   - as hex, in any letter case;
//   - as base64, standard or URL alphabet, padded or not, at any alignment inside a longer
//     base64 run (see stableBase64);
//   - all of the above again after undoing JSON string escapes, and after undoing
//     percent-encoding (with '+' as space), when the payload has a '\' or a '%'; and again
//     after undoing a second and a third layer of either inside the first.
//
// Values shorter than MinSubstring bytes are matched only as whole words (and whole base64
// tokens), and values shorter than MinEncoded only as a whole JSON string: see the package doc.
func (g *Guard) Check(payload []byte) error {
	m := g.m.Load()
	if m == nil || m.values == 0 {
		return nil
	}
	sc := getScratch()
	defer putScratch(sc)
	if e := m.scan(sc, payload); e != nil {
		g.refusals.Add(1)
		return e
	}
	return nil
}

// maxLayers bounds how many layers of escaping, one inside another, Check undoes: a JSON
// document carried as a string inside another JSON document inside a third, or a
// percent-encoded URL in a JSON string in a JSON string.
const maxLayers = 3

// scratch holds the buffers of one Check, reused through scratchPool: the normalized view, and
// one decoded view per layer.
type scratch struct {
	norm []byte
	dec  [maxLayers][]byte
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func getScratch() *scratch { return scratchPool.Get().(*scratch) }

// putScratch returns sc to the pool, unless a huge payload grew its buffers.
func putScratch(sc *scratch) {
	n := cap(sc.norm)
	for _, d := range sc.dec {
		n += cap(d)
	}
	if n <= 256<<10 {
		scratchPool.Put(sc)
	}
}

// scan checks payload and, when they differ from it, its JSON-unescaped and percent-decoded
// forms, and theirs in turn, up to maxLayers layers deep: a value in a JSON document carried
// as a JSON string is escaped twice (\\u0026 for '&'), and a path-escaped URL marshalled into
// JSON mixes both (\u0026 and %2F), so undoing one layer of either kind does not show it.
func (m *matcher) scan(sc *scratch, payload []byte) *SensitiveError {
	if e := m.scanView(sc, payload, ""); e != nil {
		return e
	}
	return m.scanDecoded(sc, payload, 0)
}

// layers are the escapings scan undoes: each is tried on a view that has its marker byte.
var layers = []struct {
	marker byte
	enc    Encoding
	undo   func(dst, b []byte) []byte
}{
	{'\\', JSONEscaped, unescapeJSON},
	{'%', PercentEncoded, unescapePercent},
}

// scanDecoded checks each form of v with one more layer undone, and recursively the forms of
// those, until depth reaches maxLayers. A refusal names the last layer undone.
func (m *matcher) scanDecoded(sc *scratch, v []byte, depth int) *SensitiveError {
	if depth == maxLayers {
		return nil
	}
	for _, l := range layers {
		if bytes.IndexByte(v, l.marker) < 0 {
			continue
		}
		// sc.dec[depth] is free: v is sc.dec[depth-1] or the payload, and the views of a
		// previous layer at this depth have been checked in full.
		d := l.undo(sc.dec[depth][:0], v)
		sc.dec[depth] = d
		if bytes.Equal(d, v) {
			continue
		}
		if e := m.scanView(sc, d, l.enc); e != nil {
			return e
		}
		if e := m.scanDecoded(sc, d, depth+1); e != nil {
			return e
		}
	}
	return nil
}

// scanView searches one form of the payload. layer is the encoding undone to get it, or "".
func (m *matcher) scanView(sc *scratch, v []byte, layer Encoding) *SensitiveError {
	sc.norm = normalize(sc.norm[:0], v)
	n := m.idx.first(sc.norm)
	if n == nil {
		return nil
	}
	enc := n.enc
	if enc == CaseFolded && bytes.Contains(v, n.exact) {
		enc = Raw
	}
	return refusal(n.kind, enc, layer)
}

func refusal(k Kind, enc, layer Encoding) *SensitiveError {
	if layer != "" && (enc == Raw || enc == CaseFolded) {
		return &SensitiveError{Kind: k, Encoding: layer}
	}
	return &SensitiveError{Kind: k, Encoding: enc, Layer: layer}
}

// Redacted replaces every sensitive value Redact finds.
const Redacted = "[redacted]"

// Redact returns s with every match of a value that can be located in s itself (raw,
// case-folded, hex, base64) replaced by Redacted. If s still fails Check afterwards (a value
// found only after undoing JSON escapes or percent-encoding), the whole of s is replaced by
// Redacted. So Redact's result never carries a value, unless a value is itself a piece of the
// word "[redacted]". Redact is for logs; it does not count refusals, but counts Redactions.
func (g *Guard) Redact(s string) string {
	m := g.m.Load()
	if m == nil || m.values == 0 || s == "" {
		return s
	}
	sc := getScratch()
	defer putScratch(sc)
	if m.scan(sc, []byte(s)) == nil {
		return s
	}
	g.redactions.Add(1)
	b := []byte(s)
	var spans [][2]int
	nb, at := normalizeMap(b)
	m.idx.each(nb, func(n *needle, i int) bool {
		spans = append(spans, [2]int{at[i], at[i+len(n.s)]})
		return true
	})
	out := replaceSpans(b, spans)
	if m.scan(sc, out) != nil {
		return Redacted
	}
	return string(out)
}

// replaceSpans returns b with the union of spans replaced, each run of overlapping or touching
// spans by one Redacted.
func replaceSpans(b []byte, spans [][2]int) []byte {
	slices.SortFunc(spans, func(x, y [2]int) int { return x[0] - y[0] })
	out := make([]byte, 0, len(b))
	pos := 0
	for i := 0; i < len(spans); {
		start, end := spans[i][0], spans[i][1]
		for i++; i < len(spans) && spans[i][0] <= end; i++ {
			end = max(end, spans[i][1])
		}
		out = append(out, b[pos:start]...)
		out = append(out, Redacted...)
		pos = end
	}
	return append(out, b[pos:]...)
}
