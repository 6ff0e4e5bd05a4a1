// Package sim is fleetsim's engine: it enrolls N simulated cameras — each the real agent
// (agent.New, agent.Run) with its own key, certificate, state directory and MQTT connection —
// runs them against a broker, plays a scenario (a connect storm, a breach campaign, a broker
// restart in the middle of one, network faults through tools/fleetsim/proxy for a share of
// the devices, skewed device clocks) and reports time to converge, rotations per second,
// per-device latency, the connection rate over time, devices not converged and commands lost.
//
// The operator side is the real fleetctl: the embedded broker and the signers run in this
// process through tools/fleetctl/cli exactly as `fleetctl broker` and `fleetctl serve` run,
// the breach notice is fleetctl's (fleet.Operator.PublishDesired), and convergence is read
// from the devices' retained state as `fleetctl status` reads it, and checked against each
// agent.
//
// A run must never touch a fleet it was not given, never leave a goroutine, agent, broker or
// persistent MQTT session of its own behind, and never report success for a device that did
// not converge or a command that was not answered.
package sim
