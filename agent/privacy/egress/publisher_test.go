package egress

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

type recorder struct{ sent []string }

func (r *recorder) Publish(_ context.Context, topic string, _ byte, _ bool, payload []byte) error {
	r.sent = append(r.sent, topic+" "+string(payload))
	return nil
}

var _ Publisher = (*recorder)(nil)

func TestWrapRefusesASensitivePublishAndPassesTheRest(t *testing.T) {
	g := canaryGuard(t)
	rec := &recorder{}
	p := Wrap(rec, g)
	ctx := context.Background()
	if err := p.Publish(ctx, "dev/cam-1/up/state", 1, true, []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	err := p.Publish(ctx, "dev/cam-1/up/reply", 1, false, []byte(`{"e":"`+base64.StdEncoding.EncodeToString([]byte(canaryNick))+`"}`))
	var se *SensitiveError
	if !errors.Is(err, ErrSensitive) || !errors.As(err, &se) || se.Kind != KindNickname {
		t.Fatalf("payload: %v", err)
	}
	if !strings.Contains(err.Error(), "dev/cam-1/up/reply") {
		t.Fatalf("the error does not name the topic: %v", err)
	}
	if err := p.Publish(ctx, "dev/"+canarySSID+"/up", 1, false, []byte(`{}`)); !errors.Is(err, ErrSensitive) || strings.Contains(err.Error(), canarySSID) {
		t.Fatalf("topic: %v", err)
	}
	if len(rec.sent) != 1 || g.Refusals() != 2 {
		t.Fatalf("sent %d messages, %d refusals; want 1 and 2", len(rec.sent), g.Refusals())
	}
}
