package egress_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/camagent/camagent/agent/privacy/egress"
)

func ExampleGuard_Check() {
	g := egress.New()
	g.Set(egress.KindSSID, "HomeNet-42")
	fmt.Println(g.Check([]byte(`{"v":1,"fw":"1.0.3"}`)))
	fmt.Println(g.Check([]byte(`{"v":1,"note":"SG9tZU5ldC00Mg=="}`)))
	fmt.Println(g.Check([]byte(`{"v":1,"note":"homenet%2D42"}`)))
	fmt.Println(g.Refusals())
	// Output:
	// <nil>
	// egress: sensitive value: ssid (base64)
	// egress: sensitive value: ssid (percent-encoded)
	// 2
}

func ExampleWrap() {
	g := egress.New()
	g.Set(egress.KindNickname, "Baby room cam")
	pub := egress.Wrap(printer{}, g)
	ctx := context.Background()
	fmt.Println(pub.Publish(ctx, "dev/cam-1/up/state", 1, true, []byte(`{"v":1}`)))
	err := pub.Publish(ctx, "dev/cam-1/up/reply", 1, false, []byte(`{"error":"camera Baby room cam busy"}`))
	fmt.Println(err, errors.Is(err, egress.ErrSensitive))
	// Output:
	// sent dev/cam-1/up/state
	// <nil>
	// publish to dev/cam-1/up/reply: egress: sensitive value: nickname (raw) true
}

type printer struct{}

func (printer) Publish(_ context.Context, topic string, _ byte, _ bool, _ []byte) error {
	fmt.Println("sent", topic)
	return nil
}

func ExampleNewRedactingHandler() {
	g := egress.New()
	g.Set(egress.KindSSID, "HomeNet-42")
	text := slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})
	log := slog.New(egress.NewRedactingHandler(text, g))
	log.Warn("cannot join HomeNet-42", "err", errors.New("wpa: HOMENET-42: 4-way handshake failed"), "rssi", -71)
	// Output:
	// level=WARN msg="cannot join [redacted]" err="wpa: [redacted]: 4-way handshake failed" rssi=-71
}
