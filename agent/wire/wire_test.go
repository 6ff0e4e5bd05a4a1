package wire

import (
	"errors"
	"testing"
)

func TestReplyRoundTrip(t *testing.T) {
	r := Reply{V: Version, Seq: 9, Type: "ping", OK: true, Status: &Status{Firmware: "1.0.0", CertSerial: "ab12"}}
	b, err := Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	var got Reply
	if err := Decode(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Seq != 9 || got.Status.CertSerial != "ab12" {
		t.Fatalf("%+v", got)
	}
}

func TestFieldsCannotCarryFreeText(t *testing.T) {
	for name, m := range map[string]validator{
		"a firmware string with spaces":   &Reply{V: 1, Type: "ping", Status: &Status{Firmware: "my home wifi"}},
		"a serial that is not hex":        &DeviceState{V: 1, Firmware: "1", CertSerial: "HomeNet"},
		"an error code that is free text": &Reply{V: 1, Type: "ping", Error: "ssid=HomeNet"},
		"a wrong version":                 &DeviceState{V: 2, Firmware: "1"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Encode(m); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Encode = %v, want ErrMalformed", err)
			}
		})
	}
}

func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"v":1,"seq":3,"type":"ping","ok":true,"status":{"fw":"1","uptime_s":1,"cert_serial":"a","cert_not_after":1,"keyset":1,"cmds_ok":1,"cmds_rejected":0}}`))
	f.Add([]byte(`{"v":1,"seq":3,"type":"ping","ok":false,"error":"bad_args"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Reply
		if Decode(b, &r) == nil {
			if _, err := Encode(&r); err != nil {
				t.Fatalf("decoded reply does not re-encode: %v", err)
			}
		}
	})
}

func FuzzDecodeDeviceState(f *testing.F) {
	f.Add([]byte(`{"v":1,"fw":"1.0","cert_serial":"ff","cert_not_after":5,"keyset":1,"updated":7}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var s DeviceState
		if Decode(b, &s) == nil {
			roundTrip(t, &s, new(DeviceState))
		}
	})
}

func FuzzDecodeCertRequest(f *testing.F) {
	f.Add([]byte(`{"v":1,"kind":"confirm","req_id":"0123456789abcdef","epoch":2,"new_serial":"ab","old_serial":"cd"}`))
	f.Add([]byte(`{"v":1,"kind":"request","req_id":"0123456789abcdef","epoch":2,"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n","token_hash":"` + "0000000000000000000000000000000000000000000000000000000000000000" + `"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r CertRequest
		if Decode(b, &r) == nil {
			if _, err := Encode(&r); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzDecodeCertResponse(f *testing.F) {
	f.Add([]byte(`{"v":1,"req_id":"0123456789abcdef","error":"refused"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r CertResponse
		if Decode(b, &r) == nil {
			roundTrip(t, &r, new(CertResponse))
		}
	})
}

func FuzzDecodeSignerPresence(f *testing.F) {
	f.Add([]byte(`{"v":1,"name":"s1","state":"serving","since":1795790000,"at":1795790030,"every_s":30}`))
	f.Add([]byte(`{"v":1,"name":"eu-west.2","state":"stopped","since":1,"at":1,"every_s":3600}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var p SignerPresence
		if Decode(b, &p) == nil {
			if _, err := Encode(&p); err != nil {
				t.Fatalf("decoded presence does not re-encode: %v", err)
			}
		}
	})
}

func TestSignerPresenceIsStrict(t *testing.T) {
	good := `{"v":1,"name":"s1","state":"serving","since":100,"at":130,"every_s":30}`
	var p SignerPresence
	if err := Decode([]byte(good), &p); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"another version":        `{"v":2,"name":"s1","state":"serving","since":100,"at":130,"every_s":30}`,
		"a name with a slash":    `{"v":1,"name":"s/1","state":"serving","since":100,"at":130,"every_s":30}`,
		"no name":                `{"v":1,"name":"","state":"serving","since":100,"at":130,"every_s":30}`,
		"an unknown state":       `{"v":1,"name":"s1","state":"asleep","since":100,"at":130,"every_s":30}`,
		"sent before it started": `{"v":1,"name":"s1","state":"serving","since":100,"at":99,"every_s":30}`,
		"no interval":            `{"v":1,"name":"s1","state":"serving","since":100,"at":130,"every_s":0}`,
		"an unknown field":       `{"v":1,"name":"s1","state":"serving","since":100,"at":130,"every_s":30,"ssid":"x"}`,
	} {
		if err := Decode([]byte(bad), new(SignerPresence)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// Version 2 of the rotation messages adds one field, the signer's retry hint, and only where
// the device asked in version 2 and was told rate_limited.
func TestCertResponseRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		body string
		ok   bool
	}{
		{`{"v":2,"req_id":"0123456789abcdef","error":"rate_limited","retry_after":42}`, true},
		{`{"v":2,"req_id":"0123456789abcdef","error":"rate_limited"}`, true},
		{`{"v":2,"req_id":"0123456789abcdef","error":"refused"}`, true},
		{`{"v":1,"req_id":"0123456789abcdef","error":"rate_limited","retry_after":42}`, false},
		{`{"v":2,"req_id":"0123456789abcdef","error":"refused","retry_after":42}`, false},
		{`{"v":2,"req_id":"0123456789abcdef","error":"rate_limited","retry_after":-1}`, false},
		{`{"v":2,"req_id":"0123456789abcdef","error":"rate_limited","retry_after":86401}`, false},
		{`{"v":3,"req_id":"0123456789abcdef","error":"rate_limited"}`, false},
	} {
		var r CertResponse
		if err := Decode([]byte(tc.body), &r); (err == nil) != tc.ok {
			t.Errorf("%s: got %v, want ok %v", tc.body, err, tc.ok)
		} else if err != nil && !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v does not say it is malformed", tc.body, err)
		}
	}
	for v, ok := range map[int]bool{0: false, 1: true, 2: true, 3: false} {
		r := CertRequest{V: v, Kind: KindConfirm, ReqID: "0123456789abcdef", Epoch: 2, NewSerial: "ab", OldSerial: "cd"}
		if err := r.Validate(); (err == nil) != ok {
			t.Errorf("request version %d: got %v, want ok %v", v, err, ok)
		}
	}
}
