package sim

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// Report is what a run measured. Times are in seconds; the timeline's clock starts when the
// first agent starts.
type Report struct {
	Scenario Scenario `json:"scenario"`
	// Broker is "embedded" or the external broker's URL.
	Broker  string `json:"broker"`
	Signers int    `json:"signers"`
	Devices int    `json:"devices"`
	// Faulted devices sat behind the fault proxy; Fault describes the fault, FaultSeconds
	// how long it lasted.
	Faulted      int     `json:"faulted,omitempty"`
	Fault        string  `json:"fault,omitempty"`
	FaultSeconds float64 `json:"fault_s,omitempty"`
	// Skewed devices had their clock moved by ClockSkewSeconds.
	Skewed           int     `json:"skewed,omitempty"`
	ClockSkewSeconds float64 `json:"clock_skew_s,omitempty"`
	// SourceAddrs is how many loopback addresses the devices dialled from (Config.SourceAddrs,
	// 127.1.0.0 and up); 0: all from the system's choice.
	SourceAddrs int `json:"source_addrs,omitempty"`

	EnrollSeconds float64 `json:"enroll_s"`
	// ConnectSeconds is the time from the first agent's start until every device connected;
	// ConnectRate is Devices over it; PeakConnects the most connections in one second of the
	// timeline.
	ConnectSeconds float64 `json:"connect_s"`
	ConnectRate    float64 `json:"connect_rate"`
	PeakConnects   int     `json:"peak_connects_per_s"`

	// Epoch is the credential epoch the campaign asked for (0 for a connect storm).
	Epoch uint64 `json:"epoch"`
	// ConvergeSeconds is the time from the breach notice (or, for a connect storm, the first
	// agent's start) until every device had converged: epoch reached, rotation idle, in its
	// retained state as in the agent.
	ConvergeSeconds float64 `json:"converge_s"`
	// Rotated counts the devices whose epoch rose to Epoch; RotationsPerSecond is Rotated
	// over the time from the notice to the last of them.
	Rotated            int     `json:"rotated"`
	RotationsPerSecond float64 `json:"rotations_per_s"`
	// Latency of each device, from the breach notice's publish to its agent's OnEpoch.
	LatencyP50Seconds float64 `json:"latency_p50_s"`
	LatencyP99Seconds float64 `json:"latency_p99_s"`
	LatencyMaxSeconds float64 `json:"latency_max_s"`
	// RotationFailures counts failed rotation steps the agents retried, and
	// RotationFailuresByCode by the error code the agent publishes in its state (agent/wire:
	// timeout, rate_limited, refused, …).
	RotationFailures       uint64            `json:"rotation_failures"`
	RotationFailuresByCode map[string]uint64 `json:"rotation_failures_by_code,omitempty"`
	// BrokerRestarts counts restarts of the embedded broker; RestartSeconds is how long it
	// was down.
	BrokerRestarts int     `json:"broker_restarts,omitempty"`
	RestartSeconds float64 `json:"restart_s,omitempty"`
	// BackSeconds is how long after the broker came back every device had been connected
	// again; NotBack counts those that were not within Config.Timeout.
	BackSeconds float64 `json:"back_s,omitempty"`
	NotBack     int     `json:"not_back,omitempty"`
	// MaxConnectRate is the embedded broker's connection budget, new connections per second
	// (0: none), for comparison with PeakConnects.
	MaxConnectRate float64 `json:"max_connect_rate,omitempty"`

	// NotConverged lists the devices that had not converged at the end (at most 50 ids;
	// NotConvergedCount is the count).
	NotConvergedCount int      `json:"not_converged"`
	NotConverged      []string `json:"not_converged_ids,omitempty"`
	// NotConvergedDetail says, for each of NotConverged, what its agent and its retained
	// state say.
	NotConvergedDetail []string `json:"not_converged_detail,omitempty"`
	// StaleRetained counts the devices of NotConverged whose agent did converge but whose
	// retained state on the broker says otherwise (an older state published after the newer
	// one, see docs/scale-out.md): the operator's view, not the device, is wrong.
	StaleRetained int `json:"stale_retained,omitempty"`
	// CommandsSent counts the signed pings sent: one to every device after convergence, and
	// for a fault or broker restart one to every affected device while it was under way
	// (queued by the broker in its persistent session). CommandsLost counts those never
	// answered (at most 50 ids in Lost).
	CommandsSent int      `json:"commands_sent"`
	CommandsLost int      `json:"commands_lost"`
	Lost         []string `json:"lost_ids,omitempty"`
	// CommandsRefused counts commands devices refused (not replays): a clock skewed beyond
	// certs.ClockSkew refuses commands as not yet valid or expired.
	CommandsRefused uint64 `json:"commands_refused"`
	// RepliesDropped counts replies a device could not publish: its connection dropped before
	// the broker acknowledged the reply (a broker restart, a cut). The agent does not publish
	// a reply again, so each of them is a command lost to the operator, although the device
	// ran it.
	RepliesDropped uint64 `json:"replies_dropped"`
	// LostReplyDropped counts the commands of CommandsLost whose device logged that it could
	// not publish the reply: lost by that gap of the agent, not by the broker or the network.
	LostReplyDropped int `json:"lost_reply_dropped"`

	// Timeline has one entry per second; Events marks what the scenario did when.
	Timeline []Second `json:"timeline"`
	Events   []Event  `json:"events"`
	// OK is set when every device converged and no command was lost.
	OK bool `json:"ok"`
}

// Second is one second of the timeline.
type Second struct {
	At              int `json:"t"`
	Connects        int `json:"connects"`
	ConnectFailures int `json:"connect_failures"`
	Lost            int `json:"connections_lost"`
	Rotations       int `json:"rotations"`
}

// Event is something the scenario did, at At seconds on the timeline.
type Event struct {
	At   float64 `json:"t"`
	What string  `json:"what"`
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("fleetsim: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// WriteText writes the report for a person: the figures, sparklines of the timeline and a
// table of it in at most 30 rows.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "fleetsim %s: %d devices, %s broker, %d signer(s)", r.Scenario, r.Devices, r.Broker, r.Signers)
	if r.Faulted > 0 {
		fmt.Fprintf(&b, "; %d behind a %s fault for %.1f s", r.Faulted, r.Fault, r.FaultSeconds)
	}
	if r.Skewed > 0 {
		fmt.Fprintf(&b, "; %d with clocks off by %+.0f s", r.Skewed, r.ClockSkewSeconds)
	}
	if r.SourceAddrs > 0 {
		fmt.Fprintf(&b, "; dialling from %d loopback address(es), %s to %s", r.SourceAddrs, SourceAddr(0), SourceAddr(r.SourceAddrs-1))
	}
	fmt.Fprintf(&b, "\n  enrolled in %.1f s; all connected %.1f s after the first start (%.0f/s, peak %d connections in one second",
		r.EnrollSeconds, r.ConnectSeconds, r.ConnectRate, r.PeakConnects)
	if r.MaxConnectRate > 0 {
		fmt.Fprintf(&b, " of the whole run, broker budget %.0f/s", r.MaxConnectRate)
	}
	b.WriteString(")\n")
	if r.Scenario != ConnectStorm {
		fmt.Fprintf(&b, "  breach to epoch %d: converged in %.2f s, %d rotations, %.0f rotations/s; latency p50 %.0f ms, p99 %.0f ms, max %.0f ms; %d failed rotation steps retried%s\n",
			r.Epoch, r.ConvergeSeconds, r.Rotated, r.RotationsPerSecond, 1000*r.LatencyP50Seconds, 1000*r.LatencyP99Seconds, 1000*r.LatencyMaxSeconds, r.RotationFailures, byCode(r.RotationFailuresByCode))
	} else {
		fmt.Fprintf(&b, "  converged (state published at the fleet's epoch %d) %.2f s after the first start\n", r.Epoch, r.ConvergeSeconds)
	}
	if r.BrokerRestarts > 0 {
		fmt.Fprintf(&b, "  broker restarted %d time(s), down %.2f s; every device connected again %.1f s after it came back", r.BrokerRestarts, r.RestartSeconds, r.BackSeconds)
		if r.NotBack > 0 {
			fmt.Fprintf(&b, " (%d not back)", r.NotBack)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "  commands: %d signed pings sent, %d lost", r.CommandsSent, r.CommandsLost)
	if r.LostReplyDropped > 0 {
		fmt.Fprintf(&b, " (%d of them ran, but the device could not publish the reply)", r.LostReplyDropped)
	}
	fmt.Fprintf(&b, "; %d refused by devices\n", r.CommandsRefused)
	if len(r.Events) > 0 {
		b.WriteString("  events:")
		for _, e := range r.Events {
			fmt.Fprintf(&b, " t=%.1fs %s;", e.At, e.What)
		}
		b.WriteString("\n")
	}
	conns, fails, lost, rots := make([]int, len(r.Timeline)), make([]int, len(r.Timeline)), make([]int, len(r.Timeline)), make([]int, len(r.Timeline))
	for i, s := range r.Timeline {
		conns[i], fails[i], lost[i], rots[i] = s.Connects, s.ConnectFailures, s.Lost, s.Rotations
	}
	fmt.Fprintf(&b, "  per second (t=0 at the first agent's start):\n")
	for _, row := range []struct {
		name string
		v    []int
	}{{"connects", conns}, {"failed", fails}, {"dropped", lost}, {"rotations", rots}} {
		fmt.Fprintf(&b, "    %-9s %s  max %d/s\n", row.name, sparkline(row.v, 120), maxOf(row.v))
	}
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "t (s)\tconnects\tfailed\tdropped\trotations\t")
	step := max(1, (len(r.Timeline)+29)/30)
	for i := 0; i < len(r.Timeline); i += step {
		var c, f, l, ro int
		for _, s := range r.Timeline[i:min(i+step, len(r.Timeline))] {
			c, f, l, ro = c+s.Connects, f+s.ConnectFailures, l+s.Lost, ro+s.Rotations
		}
		span := fmt.Sprint(i)
		if step > 1 {
			span = fmt.Sprintf("%d-%d", i, min(i+step, len(r.Timeline))-1)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t\n", span, c, f, l, ro)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "OK"
	if !r.OK {
		verdict = "FAILED"
	}
	_, err := fmt.Fprintf(w, "\nresult: %s: %d of %d devices not converged, %d of %d commands lost\n", verdict, r.NotConvergedCount, r.Devices, r.CommandsLost, r.CommandsSent)
	if err == nil && len(r.NotConverged) > 0 {
		_, err = fmt.Fprintf(w, "not converged:\n  %s\n", strings.Join(r.NotConvergedDetail, "\n  "))
	}
	if err == nil && len(r.Lost) > 0 {
		_, err = fmt.Fprintf(w, "no reply from: %s\n", strings.Join(r.Lost, " "))
	}
	return err
}

// sparkline draws v with one of ▁▂▃▄▅▆▇█ per value (a space for 0), at most width values
// (wider series are summed in groups).
func sparkline(v []int, width int) string {
	if len(v) > width {
		g := (len(v) + width - 1) / width
		var s []int
		for i := 0; i < len(v); i += g {
			sum := 0
			for _, x := range v[i:min(i+g, len(v))] {
				sum += x
			}
			s = append(s, sum)
		}
		v = s
	}
	bars := []rune("▁▂▃▄▅▆▇█")
	top := maxOf(v)
	var b strings.Builder
	for _, x := range v {
		switch {
		case x == 0:
			b.WriteRune(' ')
		default:
			b.WriteRune(bars[min((x*len(bars)-1)/top, len(bars)-1)])
		}
	}
	return b.String()
}

func maxOf(v []int) int {
	m := 0
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// byCode renders failures by code, most first: " (timeout 40, refused 2)"; "" for none.
func byCode(m map[string]uint64) string {
	if len(m) == 0 {
		return ""
	}
	codes := slices.Collect(maps.Keys(m))
	slices.SortFunc(codes, func(a, b string) int {
		if c := cmp.Compare(m[b], m[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s %d", c, m[c])
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
