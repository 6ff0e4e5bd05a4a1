package wire

import (
	"errors"
	"testing"
)

// encoding/json keeps the last of two equal keys and matches keys without regard to case
// (with Unicode folding: "ſeq" is "seq"), so a message another reader takes one way could
// decode another way here. Decode refuses both: each key is spelled as the schema spells it,
// once per object.
func TestDecodeRefusesDuplicateAndMisspelledKeys(t *testing.T) {
	good := `{"v":1,"seq":3,"type":"ping","ok":false,"error":"bad_args"}`
	if err := Decode([]byte(good), new(Reply)); err != nil {
		t.Fatalf("a plain reply is refused: %v", err)
	}
	for name, bad := range map[string]string{
		"a key given twice":                  `{"v":1,"seq":3,"seq":4,"type":"ping","ok":false,"error":"bad_args"}`,
		"a key given twice, once folded":     `{"v":1,"seq":3,"type":"ping","ok":true,"OK":false,"error":"bad_args"}`,
		"a key in upper case":                `{"V":1,"seq":3,"type":"ping","ok":false,"error":"bad_args"}`,
		"a key with a Unicode fold (long s)": `{"v":1,"ſeq":3,"type":"ping","ok":false,"error":"bad_args"}`,
		"a key given twice in a nested object": `{"v":1,"seq":3,"type":"ping","ok":true,"status":` +
			`{"fw":"1","fw":"2","uptime_s":1,"cert_serial":"a","cert_not_after":1,"keyset":1,"cmds_ok":1,"cmds_rejected":0}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if err := Decode([]byte(bad), new(Reply)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode = %v, want ErrMalformed", err)
			}
		})
	}
	dup := `{"v":1,"name":"s1","name":"s2","state":"serving","since":100,"at":130,"every_s":30}`
	if err := Decode([]byte(dup), new(SignerPresence)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a presence with a repeated name: Decode = %v, want ErrMalformed", err)
	}
}
