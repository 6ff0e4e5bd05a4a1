package onboard

import "testing"

// FuzzParse feeds arbitrary bytes to Parse: it must never panic, must refuse anything over the
// cap, and whatever it accepts must be valid, encode, and parse back to the same Setup.
func FuzzParse(f *testing.F) {
	f.Add([]byte("CAMSETUP:V:1;S:HomeNet;T:WPA;P:password;C:" + claim + ";N:Front door;Z:Europe/Paris;H:true;;"))
	f.Add([]byte(`CAMSETUP:V:1;S:a\;b\,c\:d\"e\\f;T:nopass;C:` + claim + ";;\n"))
	f.Add([]byte("CAMSETUP:V:1;;"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		if len(b) > MaxPayload {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted a setup that does not validate: %v", err)
		}
		p, err := Encode(s)
		if err != nil {
			t.Fatalf("cannot encode an accepted setup: %v", err)
		}
		if len(p) > MaxPayload {
			t.Fatalf("re-encoded to %d bytes", len(p))
		}
		s2, err := Parse([]byte(p))
		if err != nil {
			t.Fatalf("cannot parse the re-encoded setup: %v", err)
		}
		if s2 != s {
			t.Fatal("the re-encoded setup parses to another setup")
		}
	})
}
