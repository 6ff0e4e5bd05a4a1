package webrtc

import (
	"strings"
	"testing"
)

func TestSetProfileLevelIDRewritesOnlyH264VideoFormats(t *testing.T) {
	in := strings.Join([]string{
		"v=0",
		"m=audio 9 UDP/TLS/RTP/SAVPF 102",
		"a=rtpmap:102 H264/90000", // not video: left alone
		"a=fmtp:102 profile-level-id=42e01f",
		"m=video 9 UDP/TLS/RTP/SAVPF 96 102 104",
		"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", // before its rtpmap
		"a=rtpmap:96 VP8/90000",
		"a=fmtp:96 profile-level-id=42e01f",
		"a=rtpmap:102 H264/90000",
		"a=rtpmap:104 h264/90000",
		"a=fmtp:104 packetization-mode=1; Profile-Level-Id=42E01F",
		"",
	}, "\r\n")
	want := strings.Join([]string{
		"v=0",
		"m=audio 9 UDP/TLS/RTP/SAVPF 102",
		"a=rtpmap:102 H264/90000",
		"a=fmtp:102 profile-level-id=42e01f",
		"m=video 9 UDP/TLS/RTP/SAVPF 96 102 104",
		"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e00d",
		"a=rtpmap:96 VP8/90000",
		"a=fmtp:96 profile-level-id=42e01f",
		"a=rtpmap:102 H264/90000",
		"a=rtpmap:104 h264/90000",
		"a=fmtp:104 packetization-mode=1;profile-level-id=42e00d",
		"",
	}, "\r\n")
	if got := setProfileLevelID(in, "42e00d"); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	lf := strings.ReplaceAll(in, "\r\n", "\n")
	if got := setProfileLevelID(lf, "42e00d"); got != strings.ReplaceAll(want, "\r\n", "\n") {
		t.Fatalf("LF-only SDP: got\n%q", got)
	}
}

func TestSameProfile(t *testing.T) {
	for _, tt := range []struct {
		fmtp string
		want bool
	}{
		{"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", true},
		{"packetization-mode=1;profile-level-id=42E028", true},
		{"level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f", false},
		{"packetization-mode=1;profile-level-id=42001f", false},
		{"packetization-mode=1;profile-level-id=640032", false},
		{"packetization-mode=1", false},
	} {
		if got := sameProfile(tt.fmtp, "42e00d"); got != tt.want {
			t.Errorf("sameProfile(%q) = %v, want %v", tt.fmtp, got, tt.want)
		}
	}
}

func TestPionLogsHaveTheirAddressesMasked(t *testing.T) {
	for in, want := range map[string]string{
		"write udp 127.0.0.1:5000->192.0.2.7:61000: refused": "write udp <addr>:5000-><addr>:61000: refused",
		"candidate fe80::1%eth0 failed":                      "candidate <addr>%eth0 failed",
		"Discarding remote candidate: [2001:db8::7]:3478":    "Discarding remote candidate: [<addr>]:3478",
		"nothing to hide": "nothing to hide",
	} {
		if got := maskAddrs(in); got != want {
			t.Errorf("maskAddrs(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestZeroRelatedAddressesHidesTheCamerasOwnAddress(t *testing.T) {
	in := strings.Join([]string{
		"v=0",
		"m=video 9 UDP/TLS/RTP/SAVPF 102",
		"a=candidate:1 1 udp 16777215 203.0.113.9 50000 typ relay raddr 192.168.1.23 rport 41234",
		"a=candidate:2 1 udp 16777215 203.0.113.9 50002 typ relay raddr 0.0.0.0 rport 41236 generation 0",
		"a=rtpmap:102 H264/90000",
		"",
	}, "\r\n")
	want := strings.Join([]string{
		"v=0",
		"m=video 9 UDP/TLS/RTP/SAVPF 102",
		"a=candidate:1 1 udp 16777215 203.0.113.9 50000 typ relay raddr 0.0.0.0 rport 0",
		"a=candidate:2 1 udp 16777215 203.0.113.9 50002 typ relay raddr 0.0.0.0 rport 0 generation 0",
		"a=rtpmap:102 H264/90000",
		"",
	}, "\r\n")
	if got := zeroRelatedAddresses(in); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
	if !hasRelayCandidate(in) || hasRelayCandidate("v=0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n") {
		t.Fatal("hasRelayCandidate is wrong")
	}
}
