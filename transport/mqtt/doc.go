// Package mqtt is the fleet's MQTT 3.1.1 client, built on github.com/eclipse/paho.mqtt.golang.
// Devices, the signer and the operator tools use it to reach the broker over mutual TLS.
//
// What it does:
//   - connects only over TLS with a client certificate (mqtts://, ssl://, tls://) and refuses
//     plaintext URLs, InsecureSkipVerify and configurations without a pinned CA (S3);
//   - keeps a persistent session (CleanSession=false), so QoS 1 messages sent while the client
//     was offline are delivered when it returns (R3); it subscribes on every connection but a
//     reconnection it made on request to a session the broker kept (there, subscribing again
//     would only make the broker send every retained message again);
//   - manages reconnection itself, with exponential backoff, full jitter and a cap (R4), and a
//     fresh TLS handshake per connection, so a certificate swapped into certs.Holder is used
//     from the next connection on (Client.Reconnect forces one);
//   - hands inbound messages to one Handler goroutine, in arrival order, and acknowledges each
//     only after the Handler has returned, so a message is never lost to a crash or a cut;
//   - reports why it cannot connect (Config.OnConnectError) and keeps retrying (R5), turning
//     to the next of the broker's addresses after a failed attempt when it was given more
//     than one (Config.FallbackBrokerURLs), each verified under its own name.
//
// What it must never do:
//   - block paho's goroutines: the paho callbacks only append to a bounded queue;
//   - log or wrap a payload into an error: logs carry topics, sizes and errors only (P4);
//   - connect without TLS, or trust the system roots;
//   - use package-level state: every Client is independent, and paho's global loggers are
//     left untouched.
//
// Delivery is at least once: after a reconnect the broker redelivers every QoS 1 message that
// was not acknowledged, including ones the Handler already processed. Handlers must therefore
// be idempotent (R2).
package mqtt
