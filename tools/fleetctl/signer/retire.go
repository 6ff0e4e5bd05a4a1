package signer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/camagent/camagent/transport/mqtt"
)

// Retire discards the persistent session of a signer instance taken out of service for good.
//
// A stopped signer's session survives on the broker with its shared subscriptions, and both
// Mosquitto and the embedded broker keep handing it a share of the requests, which then wait,
// unanswered, for an instance that will not return (the devices ask again after their request
// timeout). Retire connects once with the instance's client id and a clean session, which
// makes the broker discard the old session, its subscriptions and whatever was queued in it
// (MQTT 3.1.1, section 3.1.2.4), clears the presence it kept retained, and disconnects. The
// instance must not be running.
func Retire(ctx context.Context, brokerURL, clientID string, tlsConf *tls.Config, log *slog.Logger) error {
	c, err := mqtt.New(mqtt.Config{BrokerURL: brokerURL, ClientID: clientID, TLS: tlsConf, CleanSession: true, Logger: log})
	if err != nil {
		return fmt.Errorf("signer: retire: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	err = c.WaitConnected(ctx)
	if err == nil {
		// Its presence goes too: status no longer lists it.
		err = c.Publish(ctx, PresenceTopic(clientID), 1, true, nil)
	}
	cancel()
	if runErr := <-done; runErr != nil && !errors.Is(runErr, mqtt.ErrClosed) {
		err = errors.Join(err, runErr)
	}
	if err != nil {
		return fmt.Errorf("signer: retire %s: %w", clientID, err)
	}
	return nil
}
