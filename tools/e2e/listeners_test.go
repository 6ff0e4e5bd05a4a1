package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/camagent/camagent/tools/fleetctl/fleettest"
	"github.com/camagent/camagent/transport/webrtc/signal"
)

// procSocket is one of a process's sockets, from /proc/<pid>/net.
type procSocket struct {
	proto string // tcp, tcp6, udp, udp6
	port  int
	state string // hex state: 0A is TCP LISTEN; 07 is an unconnected UDP socket
}

// socketsOf lists the sockets process pid holds: the inodes of its fds matched against the
// tables of its network namespace.
func socketsOf(t *testing.T, pid int) []procSocket {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []procSocket
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, proto))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || !inodes[fields[9]] {
				continue
			}
			_, portHex, _ := strings.Cut(fields[1], ":")
			port, err := strconv.ParseInt(portHex, 16, 32)
			if err != nil {
				t.Fatalf("/proc/%d/net/%s: %q", pid, proto, sc.Text())
			}
			out = append(out, procSocket{proto: proto, port: int(port), state: fields[3]})
		}
		f.Close()
	}
	return out
}

var candidatePort = regexp.MustCompile(`(?m)^a=candidate:\S+ \d+ (?i:udp) \d+ \S+ (\d+) typ`)

// The agent opens no listening socket: while it streams, its only sockets besides its MQTT
// connection are the UDP ports of the live session's ICE candidates, and they close with the
// session (P2b; issue 5's "no listeners").
func TestAgentListensOnNothingButLiveICEPorts(t *testing.T) {
	f, _ := newFleet(t)
	url := fleettest.StartBroker(t, f)
	fleettest.StartSigner(t, f, url, "--log-level", "warn")
	dir := enroll(t, f, "cam-0001")
	clip, err := filepath.Abs(filepath.Join("..", "..", "device", "camera", "testdata", "clip.h264"))
	if err != nil {
		t.Fatal(err)
	}
	p := startProc(t, dir, url, "--video-file", clip, "--video-loopback")
	e := &env{f: f, url: url}
	pingOK(t, e, "cam-0001")
	pid := p.cmd.Process.Pid

	check := func(when string, wantUDP []int) {
		t.Helper()
		var udp []int
		tcp := 0
		for _, s := range socketsOf(t, pid) {
			switch {
			case strings.HasPrefix(s.proto, "tcp") && s.state == "0A":
				t.Errorf("%s: camagent listens on %s port %d", when, s.proto, s.port)
			case strings.HasPrefix(s.proto, "tcp"):
				tcp++
			default:
				udp = append(udp, s.port)
			}
		}
		slices.Sort(udp)
		slices.Sort(wantUDP)
		if tcp != 1 {
			t.Errorf("%s: %d TCP sockets, want only the MQTT connection", when, tcp)
		}
		if !slices.Equal(udp, wantUDP) {
			t.Errorf("%s: UDP ports %v, want the live session's ICE ports %v", when, udp, wantUDP)
		}
	}
	check("idle", nil)

	r := dialRelay(t, f, url)
	v, ans := watchLive(t, r, "cam-0001", signGrant(t, f, "cam-0001", 0))
	var ice []int
	for _, m := range candidatePort.FindAllStringSubmatch(ans.SDP, -1) {
		port, _ := strconv.Atoi(m[1])
		if !slices.Contains(ice, port) {
			ice = append(ice, port)
		}
	}
	if len(ice) == 0 {
		t.Fatalf("the answer has no UDP candidates:\n%s", ans.SDP)
	}
	check("streaming", ice)

	// Hang up: the session's ICE sockets close with it.
	r.send(t, "cam-0001", signal.Bye{V: signal.Version, Session: v.offer.Session, Key: v.offer.Key, Reason: signal.ByeHangup})
	deadline := time.Now().Add(15 * time.Second)
	for {
		n := 0
		for _, s := range socketsOf(t, pid) {
			if strings.HasPrefix(s.proto, "udp") {
				n++
			}
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			check("after hang-up", nil)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
}
