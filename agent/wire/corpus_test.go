package wire

import (
	"encoding/json"
	"flag"
	"testing"

	"github.com/camagent/camagent/internal/fuzzseed"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpora under testdata/fuzz")

// TestSeedCorpus keeps testdata/fuzz seeded with a valid message of each type and the
// near-misses Decode must refuse (a repeated key, a folded key, free text around a PEM
// block); run with -update to regenerate. Without -update it checks the corpora exist.
func TestSeedCorpus(t *testing.T) {
	csr := pemOf("CERTIFICATE REQUEST", nil)
	cert := pemOf("CERTIFICATE", nil)
	q := func(s string) string {
		b, _ := json.Marshal(s)
		return string(b)
	}
	seeds := map[string][]string{
		"FuzzDecodeReply": fuzzseed.BytesSeeds(
			[]byte(`{"v":1,"seq":3,"type":"ping","ok":true,"status":{"fw":"1","uptime_s":1,"cert_serial":"a","cert_not_after":1,"keyset":1,"cmds_ok":1,"cmds_rejected":0}}`),
			[]byte(`{"v":1,"seq":3,"type":"ping","ok":false,"error":"bad_args"}`),
			[]byte(`{"v":1,"seq":3,"seq":4,"type":"ping","ok":false,"error":"bad_args"}`),
			[]byte(`{"V":1,"seq":3,"type":"ping","ok":false,"error":"bad_args"}`),
		),
		"FuzzDecodeDeviceState": fuzzseed.BytesSeeds(
			[]byte(`{"v":1,"fw":"1.0","cert_serial":"ff","cert_not_after":5,"keyset":1,"epoch":2,"rotation":"failed","last_error":"timeout","privacy":true,"updated":7}`),
			[]byte(`{"v":1,"fw":"1.0","cert_serial":"ff","cert_not_after":5,"keyset":1,"updated":7,"ssid":"HomeNet"}`),
		),
		"FuzzDecodeCertRequest": fuzzseed.BytesSeeds(
			[]byte(`{"v":1,"kind":"confirm","req_id":"0123456789abcdef","epoch":2,"new_serial":"ab","old_serial":"cd"}`),
			[]byte(`{"v":1,"kind":"request","req_id":"0123456789abcdef","epoch":2,"csr":`+q(csr)+`,"token_hash":"`+tokenHash+`"}`),
			[]byte(`{"v":1,"kind":"request","req_id":"0123456789abcdef","epoch":2,"csr":`+q("ssid=HomeNet\n"+csr)+`,"token_hash":"`+tokenHash+`"}`),
			[]byte(`{"v":2,"kind":"request","req_id":"0123456789abcdef","epoch":2,"csr":`+q(csr)+`,"token_hash":"`+tokenHash+`"}`),
		),
		"FuzzDecodeCertResponse": fuzzseed.BytesSeeds(
			[]byte(`{"v":1,"req_id":"0123456789abcdef","error":"refused"}`),
			[]byte(`{"v":1,"req_id":"0123456789abcdef","cert":`+q(cert)+`}`),
			[]byte(`{"v":1,"req_id":"0123456789abcdef","cert":`+q(cert+"trailing text\n")+`}`),
			[]byte(`{"v":2,"req_id":"0123456789abcdef","error":"rate_limited","retry_after":42}`),
			[]byte(`{"v":1,"req_id":"0123456789abcdef","error":"rate_limited","retry_after":42}`),
		),
		"FuzzDecodeSignerPresence": fuzzseed.BytesSeeds(
			[]byte(`{"v":1,"name":"s1","state":"serving","since":1795790000,"at":1795790030,"every_s":30}`),
			[]byte(`{"v":1,"name":"eu-west.2","state":"stopped","since":1,"at":1,"every_s":3600}`),
		),
		"FuzzDecodeClaim": fuzzseed.BytesSeeds(
			[]byte(`{"v":1,"claim":"Zm9vYmFyLWNsYWltLXRva2Vu","updated":1795790000}`),
			[]byte(`{"v":1,"claim":"Zm9vYmFyLWNsYWltLXRva2Vu","claim":"x","updated":1}`),
		),
		"FuzzDecodeTelemetry": fuzzseed.BytesSeeds(
			[]byte(`{"v":1,"fw":"1.0.0","uptime_s":60,"cert_serial":"ab12","epoch":2,"privacy":false,"viewers":1,"sessions":3,"frames_captured":900,"wifi_signal_dbm":-61,"network_tag":"9f86d081884c7d659a2feaa0c55ad015","egress_refusals":0,"updated":1795790000}`),
			[]byte(`{"v":1,"fw":"1","uptime_s":0,"cert_serial":"","epoch":0,"privacy":true,"viewers":0,"sessions":0,"frames_captured":0,"egress_refusals":4,"updated":0}`),
		),
	}
	fuzzseed.Sync(t, *update, seeds)
}
