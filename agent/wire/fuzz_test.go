package wire

import (
	"reflect"
	"testing"
)

// roundTrip checks that a decoded message m re-encodes, and that the encoding decodes into
// fresh to the same message.
func roundTrip(t *testing.T, m, fresh validator) {
	t.Helper()
	b, err := Encode(m)
	if err != nil {
		t.Fatalf("a decoded message does not re-encode: %v", err)
	}
	if err := Decode(b, fresh); err != nil {
		t.Fatalf("a re-encoded message does not decode: %v", err)
	}
	if !reflect.DeepEqual(m, fresh) {
		t.Fatalf("a message changed on the way round: %+v, then %+v", m, fresh)
	}
}

func FuzzDecodeClaim(f *testing.F) {
	f.Add([]byte(`{"v":1,"claim":"Zm9vYmFyLWNsYWltLXRva2Vu","updated":1795790000}`))
	f.Add([]byte(`{"v":1,"claim":"Zm9vYmFy LWNsYWltLXRva2Vu","updated":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Claim
		if Decode(b, &c) == nil {
			roundTrip(t, &c, new(Claim))
		}
	})
}

func FuzzDecodeTelemetry(f *testing.F) {
	f.Add([]byte(`{"v":1,"fw":"1.0.0","uptime_s":60,"cert_serial":"ab12","epoch":2,"privacy":false,"viewers":1,"sessions":3,"frames_captured":900,"wifi_signal_dbm":-61,"network_tag":"9f86d081884c7d659a2feaa0c55ad015","egress_refusals":0,"updated":1795790000}`))
	f.Add([]byte(`{"v":1,"fw":"1","uptime_s":0,"cert_serial":"","epoch":0,"privacy":true,"viewers":0,"sessions":0,"frames_captured":0,"egress_refusals":4,"updated":0}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Telemetry
		if Decode(b, &m) == nil {
			roundTrip(t, &m, new(Telemetry))
		}
	})
}
