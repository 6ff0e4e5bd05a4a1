//go:build bench

package bench

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/tools/fleetctl/fleet"
	"github.com/camagent/camagent/transport/mqtt/mqtttest"
)

var (
	out  = flag.String("report", "", "write the report to this file")
	runs = flag.Int("runs", 5, "repetitions of each measurement; the report quotes medians")
	only = flag.String("only", "", "comma-separated measurements to run (ping, idle-rss, keyframe, viewers, rotation-latency, fleet-rotation, fleet-rotation-embedded: its first row alone, binary-size); default all. A partial report is for a developer's look, not for docs/benchmarks.md")
)

// row is one line of the report.
type row struct {
	figure, goal, measured, note string
	met                          bool
}

type report struct{ rows []row }

func (r *report) add(figure, goal, measured, note string, met bool) {
	r.rows = append(r.rows, row{figure, goal, measured, note, met})
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := int(p * float64(len(s)-1))
	return s[i]
}

var discard = slog.New(slog.DiscardHandler)

// notes explains figures the table alone would mislead about.
const notes = `
## Notes

**Fleet rotation rate.** 1,000 simulated devices run in this one process, sharing its two
cores with the broker and the signer. Their state directories are on tmpfs, because a real
camera fsyncs its own storage while 1,000 simulated ones would queue on this machine's one disk
(about 1,200 atomic writes a second; a rotation makes about eight); the shared-disk row shows
that effect. The broker's and the signer's files stay on the disk. A CPU profile of the breach
window (embedded broker, 2026-11-27) puts about 7.8 ms of CPU into each rotation, where one raw
handshake (both ends) costs about 2 ms: the new connection's handshake is about 22 % of it,
mochi (routing, sessions, its bbolt store of every QoS 1 message in flight) about 25 %,
signatures outside the handshake (the CSR made and checked, the certificate issued and checked:
Go's x509 verifies every signature it makes) about 10 %, garbage collection in a process
hosting 1,000 agents about 12 %, and the device's journal writes about 7 %. The changes of
2026-11-27 took the embedded-broker ratio from 0.20–0.23 to 0.24–0.30 in single breaches: mochi
no longer stores and deletes the PUBACK of every inbound QoS 1 message and commits its store in
groups (bbolt's share of the profile fell from 11.5 % to 7.8 %), a reconnection on request to a
kept session does not subscribe again (so the retained breach notice is not sent, verified and
journaled once more per rotation), the agent skips a desired-state document it has applied and
a state write that changes nothing, and the connection a rotation makes does not publish the
intermediate device state. Later that day mochi stopped allocating a 64 KiB outbound buffer per
connection (patch 9) and its store's writer began to wait for writers ready to run before each
commit (about 3.9 transactions per rotation instead of 8): a profiled rotation then took about
7.2 ms of CPU, and the ratio stayed at 0.28, measured against a handshake rate that itself
moves between about 850 and 1,070 a second here. The goal of 0.5 × the handshake rate is not
met; what is left is
mostly the handshake and the signatures the protocol needs, the broker's per-message work and
its store, and the garbage collector. On the Mosquitto row the rate is bounded by Mosquitto
itself: it does every TLS handshake on its one thread, so it accepts fewer handshakes a second
than the Go pair does (the row's note has the figure, measured in the same run), and every
rotation is one new connection to it. Until 2026-11-29 it accepted fewer than half as many, and
a third of its CPU in each handshake went into two TLS 1.3 session tickets that no fleet client
uses; it now runs, as deployed, with the openssl.cnf of ` + "`fleetctl mosquitto-config`" + `, which
stops them (docs/scale-out.md). Where the rest of Mosquitto's time goes in a handshake
(OpenSSL 3.0's allocation, locking and decoder lookups around the curve arithmetic, which no
Mosquitto setting removes) is in docs/scale-out.md; a
second perf profile taken 2026-11-27 agrees (libcrypto 55 %, libc 27 % of which read-write
locks 9 % and malloc and free 11 %, the kernel 14 %). A profile of one breach on 2026-11-28
(embedded broker, 6.3 ms of CPU a rotation) finds no part whose removal would halve it:
system calls 24 % (loopback TCP writes, whose receiving side the kernel runs in the sender's
time, the state files' opens, writes and renames on tmpfs), the new connection's handshake 19 %,
the device's atomic state writes 13 % (with their system calls), allocation and garbage collection 12 %, ECDSA
verifications outside the handshake 11 %.

What 0.5 would need (2026-11-29). A profile of one breach with this report's code (embedded
broker, about 3.9 ms of CPU a rotation where one raw handshake, both ends, costs about 1.1 ms)
splits a rotation by who does the work: the new connection's handshake 23–26 %; the broker
(mochi's routing, sessions and bbolt store, the admission check) 17 %; the signatures outside
the handshake 14–16 %; the garbage collector 15–20 % (the process holds about 18,000
goroutines, 17 per simulated device of which paho starts nine per connection, and about
100 MiB of live heap); the devices' MQTT clients (paho, transport/mqtt) 11–12 %; the agents'
own work with their journal and key writes 7–9 %; the signer 4–5 %. The row's last figure is
measured, not profiled: the signatures alone hold the ratio to about two thirds. For 0.5, all
the rest (every MQTT message of a rotation through both clients and the broker, the broker's
store, the device's fsynced journal, the collector) would have to cost half a handshake, about
a fifth of what it costs here; no part is big enough for its removal to get there, and the
parts are the ones the issues ask for.

**Live video.** The clip is made by the benchmark itself with tools/mkclip
(` + "`mkclip.sh OUT 1280 720 30 10 2M 30`" + `: testsrc2 in constrained baseline, 1280x720, 30 fps,
2 Mb/s, a keyframe every 30 frames, 10 s looped; keyframes about 29 KB, other frames about
8 KB). The camera is the shipped binary (dist/linux-amd64/camagent) in its own process, run
with ` + "`--video-file CLIP --max-viewers 128 --video-loopback`" + `, so nothing the viewers do is counted
in its CPU or memory; signaling goes through the embedded broker and the viewer relay identity
viewer:bench (tools/camview/relay), with a grant the fleet signed.
*Time to first keyframe*: with one viewer already watching, 20 viewers per run join one at a
time; each watches for a random 0.3–1.3 s and the next joins as it hangs up, so the joins land
anywhere in the GOP. Each is camview's receiver (pion with its default interceptors), timed from
publishing its offer (ICE already gathered, as a browser does) to its first complete keyframe.
The camera-side figure comes from an AF_PACKET tap on loopback with kernel timestamps (the
camera logs no such moment and its Streamer's Stats keep no times): the broker's TLS segment
carrying the offer to the camera's MQTT connection, the camera's answer, and its first SRTP
video packet to the new viewer. Both include the viewer's half of the ICE and DTLS handshakes,
a few milliseconds on loopback. The camera sends a joiner the keyframe at once and the rest of
the cached GOP (up to about 230 packets) paced at 4× the stream's bitrate
(transport/webrtc.CatchUpFactor), so that catch-up no longer overflows a receiver's default
socket buffer; the row counts any packet a joiner lost all the same.
*Viewers*: each run starts a fresh camera, samples it for 10 s streaming to nobody (the source
and fan-out only), then adds viewers, eight negotiating at a time, up to 10, 50 and 100, and
samples each count for 10 s once every viewer has its first keyframe and 2 s have passed. CPU
is utime+stime from /proc/PID/stat over the window, memory the mean VmRSS, each per viewer as
(X(N) − X(0)) / N. These viewers are lean pion receivers written for the benchmark (no
interceptors, no depacketizing, no allocation per packet), because camview's receiver (NACK,
TWCC, receiver reports, a sample builder, an allocation per packet) took about twice the CPU
in this process at 100 viewers in a trial run, and with pion's default socket buffers lost
about ten times as many packets as the lean receivers did with the same buffers. Loss is
the RTP sequence gaps every viewer saw (without a NACK generator a lost packet stays lost),
checked against the kernel's drop counter of every UDP socket (/proc/net/udp) on both sides and
the frames the camera logs as dropped for full viewer queues (those leave no sequence gap, since
each viewer's numbering is its own). The viewers' sockets get 256 KiB receive buffers, what
libwebrtc asks for on its video sockets (kVideoRtpRecvBufferSize); with the system default
(208 KiB, ` + "`-viewer-rcvbuf 0`" + `) they lost about 2,200 packets per trial run at 100 viewers, every
one a kernel drop at a viewer socket, a third of them in steady state. The receivers and the broker
share the benchmark process and the two cores with whatever else runs on the machine; the loss
row says where the loss it counts was dropped.
`

func ms(d float64) string { return strconv.FormatFloat(d, 'f', 2, 64) + " ms" }

func TestReport(t *testing.T) {
	if *out == "" {
		t.Fatal("run through make bench (needs -report FILE)")
	}
	var r report
	want := func(name string) bool {
		return *only == "" || slices.Contains(strings.Split(*only, ","), name)
	}
	if want("ping") {
		measurePing(t, &r)
	}
	if want("idle-rss") {
		measureIdleRSS(t, &r)
	}
	if want("keyframe") || want("viewers") {
		clip := makeClip(t)
		if want("keyframe") {
			measureTimeToKeyframe(t, &r, clip)
		}
		if want("viewers") {
			measureViewers(t, &r, clip)
		}
	}
	if want("rotation-latency") {
		measureRotationLatency(t, &r)
	}
	if want("fleet-rotation") || want("fleet-rotation-embedded") {
		measureFleetRotation(t, &r, !want("fleet-rotation"))
	}
	if want("binary-size") {
		measureBinarySizes(t, &r)
	}
	writeReport(t, &r)
}

func newFleet(t *testing.T) (*fleet.Fleet, *mqtttest.PKI) {
	f, err := fleet.Init(filepath.Join(t.TempDir(), "fleet"), fleet.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return f, &mqtttest.PKI{CA: f.CA, CAPEM: f.CAPEM, Pool: f.Pool}
}

func enroll(t testing.TB, f *fleet.Fleet, id string) string {
	return enrollIn(t, f, t.TempDir(), id)
}

// enrollIn enrolls id with its state directory under base.
func enrollIn(t testing.TB, f *fleet.Fleet, base, id string) string {
	dir := filepath.Join(base, id)
	csr, err := agent.Enroll(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := f.Enroll(csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.InstallBundle(dir, b, time.Now()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// measurePing: signed ping round trip, operator → broker → agent → broker → operator, over
// loopback mTLS, on both brokers. Goal p50 ≤ 5 ms.
func measurePing(t *testing.T, r *report) {
	f, pki := newFleet(t)
	ids := mqtttest.WithIdentities("operator:" + fleet.DefaultOperator)
	for _, start := range []func(testing.TB, *mqtttest.PKI, ...mqtttest.Option) mqtttest.Broker{
		func(t testing.TB, p *mqtttest.PKI, o ...mqtttest.Option) mqtttest.Broker {
			return mqtttest.StartEmbedded(t, p, o...)
		},
		func(t testing.TB, p *mqtttest.PKI, o ...mqtttest.Option) mqtttest.Broker {
			return mqtttest.StartMosquitto(t, p, o...)
		},
	} {
		b := start(t, pki, ids)
		dir := enroll(t, f, "cam-bench")
		a, err := agent.New(agent.Config{StateDir: dir, BrokerURL: b.URL()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		<-a.Connected()
		op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: b.URL()})
		if err != nil {
			t.Fatal(err)
		}
		var p50s, p99s []float64
		for run := 0; run < *runs; run++ {
			var rtts []time.Duration
			for i := 0; i < 500; i++ {
				pctx, pc := context.WithTimeout(ctx, 10*time.Second)
				_, rtt, err := op.Ping(pctx, "cam-bench")
				pc()
				if err != nil {
					t.Fatal(err)
				}
				if i >= 50 { // warm-up
					rtts = append(rtts, rtt)
				}
			}
			p50s = append(p50s, float64(percentile(rtts, 0.5).Microseconds())/1000)
			p99s = append(p99s, float64(percentile(rtts, 0.99).Microseconds())/1000)
		}
		op.Close()
		cancel()
		<-done
		b.Stop(t)
		r.add("Signed ping round trip, loopback mTLS, "+b.Name()+" broker: p50", "≤ 5 ms", ms(median(p50s)),
			fmt.Sprintf("p99 %s; %d runs × 450 pings, median of runs", ms(median(p99s)), *runs), median(p50s) <= 5)
	}
}

// measureIdleRSS: resident memory of the real camagent binary, connected and idle.
func measureIdleRSS(t *testing.T, r *report) {
	measureIdleRSSOf(t, r, runtime.GOOS+"-"+runtime.GOARCH, "")
	// The arm64 build under qemu-user: the figure includes the emulator's own memory (its
	// translation cache and its mappings), so it bounds the camera's figure from above.
	measureIdleRSSOf(t, r, "linux-arm64", "qemu-aarch64")
}

func measureIdleRSSOf(t *testing.T, r *report, arch, emulator string) {
	// The stripped static build is what ships to cameras (make cross, .deb packages); an
	// unstripped build maps more file pages.
	bin, err := filepath.Abs(filepath.Join("../../dist", arch, "camagent"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing: make bench runs make cross first", bin)
	}
	f, pki := newFleet(t)
	b := mqtttest.StartEmbedded(t, pki)
	var kib, anon []float64
	for run := 0; run < *runs; run++ {
		dir := enroll(t, f, fmt.Sprintf("cam-rss-%d", run))
		args := []string{bin, "run", "--state", dir, "--broker", b.URL(), "--log-level", "warn"}
		if emulator != "" {
			args = append([]string{emulator}, args...)
		}
		cmd := exec.Command(args[0], args[1:]...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		op, err := f.Dial(ctx, fleet.OperatorOptions{Broker: b.URL()})
		if err != nil {
			t.Fatal(err)
		}
		for {
			pctx, pc := context.WithTimeout(ctx, time.Second)
			_, _, err := op.Ping(pctx, fmt.Sprintf("cam-rss-%d", run))
			pc()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("agent never answered: %v\n%s", err, stderr.String())
			}
		}
		op.Close()
		cancel()
		time.Sleep(5 * time.Second) // idle, connected
		kib = append(kib, float64(procField(t, fmt.Sprintf("/proc/%d/status", cmd.Process.Pid), "VmRSS:")))
		anon = append(anon, float64(procField(t, fmt.Sprintf("/proc/%d/smaps_rollup", cmd.Process.Pid), "Anonymous:")))
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
	if emulator != "" {
		r.add("Resident memory of a connected idle agent (camagent linux/arm64 under "+emulator+")", "beside the native figure",
			fmt.Sprintf("%.1f MiB", median(kib)/1024), fmt.Sprintf("VmRSS of the %s process running the stripped arm64 build, 5 s idle, median of %d runs: the agent plus the emulator's translation cache and mappings, so an upper bound for a Pi; of which anonymous %.1f MiB", emulator, *runs, median(anon)/1024), true)
		return
	}
	r.add("Resident memory of a connected idle agent (camagent "+arch+")", "≤ 12 MiB",
		fmt.Sprintf("%.1f MiB", median(kib)/1024), fmt.Sprintf("VmRSS of the stripped static build after 5 s idle, no video configured, median of %d runs; of which anonymous (heap, stacks) %.1f MiB, the rest clean pages of the executable", *runs, median(anon)/1024), median(kib)/1024 <= 12)
}

// procField reads a "Name: N kB" field of a /proc file.
func procField(t *testing.T, path, name string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	t.Fatalf("no %s in %s", name, path)
	return 0
}

// measureBinarySizes reads the stripped static binaries `make cross` built.
func measureBinarySizes(t *testing.T, r *report) {
	for _, arch := range []string{"linux-arm64", "linux-armv6", "linux-armv7", "linux-amd64"} {
		fi, err := os.Stat(filepath.Join("../../dist", arch, "camagent"))
		if err != nil {
			t.Fatalf("%v: make bench runs make cross first", err)
		}
		size := fmt.Sprintf("%.1f MiB", float64(fi.Size())/(1<<20))
		if arch == "linux-amd64" {
			// Not a camera build: issue 2 sets the goal for the ARM builds. It is the build
			// the resident-memory row above runs, and shown for that.
			r.add("camagent binary size, "+arch+", static, stripped", "beside the ARM figures", fmt.Sprintf("%s (%d bytes)", size, fi.Size()), "CGO_ENABLED=0 -trimpath -ldflags=-s -w; the build for PCs (tests, demos) and the one the resident-memory row runs", true)
			continue
		}
		r.add("camagent binary size, "+arch+", static, stripped", "≤ 12 MiB", size, "CGO_ENABLED=0 -trimpath -ldflags=-s -w", fi.Size() <= 12<<20)
	}
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(strings.SplitN(l, ":", 2)[1])
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(f) >= 2 {
			kb, _ := strconv.Atoi(f[1])
			mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("%s, %d cores%s, Linux %s, %s", model, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)), runtime.Version())
}

func writeReport(t *testing.T, r *report) {
	var b strings.Builder
	fmt.Fprintf(&b, "# Benchmarks\n\nGenerated by `make bench` on %s.\n\nMachine: %s.\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"), machine())
	b.WriteString("The machines are shared and noisy: every figure is the median of several runs in one session, and ratios are measured side by side in the same run. Nothing here is asserted by a test.\n\n")
	b.WriteString("| figure | goal | measured | met | how |\n|---|---|---|---|---|\n")
	for _, x := range r.rows {
		met := "yes"
		if !x.met {
			met = "**no**"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", x.figure, x.goal, x.measured, met, x.note)
	}
	b.WriteString(notes)
	if err := os.WriteFile(*out, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s:\n%s", *out, b.String())
}
