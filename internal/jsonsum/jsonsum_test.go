package jsonsum

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// Every one-bit change of a file Append wrote fails: Strip refuses it, or what it returns no
// longer decodes into the value written, strictly (no unknown members).
func TestEveryOneBitChangeIsCaught(t *testing.T) {
	type v struct {
		Mark  uint64 `json:"mark"`
		Epoch uint64 `json:"epoch"`
		Name  string `json:"name,omitempty"`
	}
	want := v{Mark: 1764316800000000000, Epoch: 3, Name: "x"}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	saved := Append(b)
	body, err := Strip(saved)
	if err != nil || !bytes.Equal(body, b) {
		t.Fatalf("Strip(Append(%s)) = %s, %v", b, body, err)
	}
	for bit := range 8 * len(saved) {
		c := bytes.Clone(saved)
		c[bit/8] ^= 1 << (bit % 8)
		body, err := Strip(c)
		if err != nil {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var got v
		if err := dec.Decode(&got); err == nil {
			t.Fatalf("bit %d flipped: %s reads as %+v", bit, c, got)
		}
	}
}

func TestStrip(t *testing.T) {
	good := Append([]byte(`{"a":1}`))
	for _, tc := range []struct {
		name, in string
		ok       bool
		mismatch bool
	}{
		{"a file Append wrote", string(good), true, false},
		{"a file without a checksum is returned as it is", `{"a":1}`, true, false},
		{"a changed value", `{"a":2` + string(good[6:]), false, true},
		{"upper-case hex", string(good[:len(good)-10]) + string(bytes.ToUpper(good[len(good)-10:])), false, false},
		{"a short checksum", `{"a":1,"crc32c":"1234"}`, false, false},
		{"data after the checksum", string(good) + " ", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Strip([]byte(tc.in))
			if (err == nil) != tc.ok || errors.Is(err, ErrMismatch) != tc.mismatch {
				t.Fatalf("Strip(%s) = %v", tc.in, err)
			}
		})
	}
}

func FuzzStrip(f *testing.F) {
	f.Add([]byte(`{"a":1}`))
	f.Add(Append([]byte(`{"a":1,"b":"c"}`)))
	f.Add([]byte(`{"a":1,"crc32c":"zzzzzzzz"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		body, err := Strip(b)
		if !bytes.Equal(b, in) {
			t.Fatal("Strip changed its input")
		}
		if err != nil {
			return
		}
		// What Strip takes, Append writes again: unless it had no checksum.
		if !bytes.Equal(body, b) && !bytes.Equal(Append(bytes.Clone(body)), b) {
			t.Fatalf("Strip(%q) = %q, which Append does not write back", b, body)
		}
	})
}
