package signer_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/camagent/camagent/agent/wire"
	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

// BenchmarkIssue measures certificates issued per second by one signer, request to answer,
// with 32 devices each asking as an agent does: one request at a time. It covers CSR
// parsing, signing, one registry fsync per batch, and the broker's QoS 1 round trips — on the
// embedded broker (which persists every in-flight message to bbolt) and on Mosquitto.
func BenchmarkIssue(b *testing.B) {
	for _, name := range []string{"embedded", "mosquitto"} {
		b.Run(name, func(b *testing.B) {
			f, pki := fleettest.NewFleet(b)
			var brk mqtttest.Broker
			if name == "embedded" {
				brk = mqtttest.StartEmbedded(b, pki)
			} else {
				brk = mqtttest.StartMosquitto(b, pki, fleettest.Identities())
			}
			startSigner(b, f, brk.URL(), "bench", nil)
			const devices = 32
			per := b.N/devices + 1
			var ds []*fleettest.Device
			var reqs [][]wire.CertRequest
			for i := range devices {
				e := fleettest.Enroll(b, f, fmt.Sprintf("cam-%04d", i))
				ds = append(ds, fleettest.Connect(b, f, brk.URL(), e.Cert))
				var rs []wire.CertRequest
				for range per {
					r, _ := fleettest.NewRequest(b, e.ID, 1)
					rs = append(rs, r)
				}
				reqs = append(reqs, rs)
			}
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for i, d := range ds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for _, r := range reqs[i] {
						d.Send(b, r)
						if a := d.AwaitFor(b, r.ReqID); a.Error != "" {
							b.Errorf("answer %+v", a)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(devices*per)/time.Since(start).Seconds(), "certs/s")
		})
	}
}
