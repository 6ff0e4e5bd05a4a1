//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd || solaris

package broker

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns the two ends of a TCP connection on loopback, the dialled one first, both
// closed when the test ends.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// arrived waits, for at most 10 s, until something has come to s from its peer (data, the end
// of the stream, a reset), without reading it or taking a pending error: poll(2).
func arrived(t *testing.T, s *net.TCPConn) {
	t.Helper()
	rc, err := s.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	err = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err = unix.Poll(fds, 10_000)
			if err != unix.EINTR {
				return
			}
		}
	})
	if err != nil || n != 1 {
		t.Fatalf("nothing came from the peer in 10 s (%v)", err)
	}
}

// peerGone tells a peer that closed or reset its end from one that is there, with or without
// data sent, on the first look once that has come, reads nothing, and does so also past the
// socket's deadline; a conn that is no *net.TCPConn counts as there.
func TestPeerGoneTellsAClosedOrResetSocket(t *testing.T) {
	t.Run("a peer that sent nothing is there", func(t *testing.T) {
		_, s := tcpPair(t)
		if peerGone(s) {
			t.Fatal("peerGone = true")
		}
	})
	t.Run("a peer with data pending is there, and the data stays", func(t *testing.T) {
		c, s := tcpPair(t)
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		arrived(t, s)
		s.SetReadDeadline(time.Now().Add(-time.Second)) // a deadline passed, as at a late turn
		if peerGone(s) {
			t.Fatal("peerGone = true with data pending")
		}
		s.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 2)
		if _, err := io.ReadFull(s, b); err != nil || string(b) != "hi" {
			t.Fatalf("read %q, %v after peerGone; want the bytes sent", b, err)
		}
	})
	for _, tc := range []struct {
		name string
		end  func(c *net.TCPConn)
	}{
		{"a peer that closed is gone", func(c *net.TCPConn) { c.Close() }},
		{"a peer that closed its sending side is gone", func(c *net.TCPConn) { c.CloseWrite() }},
		{"a peer that reset is gone", func(c *net.TCPConn) { c.SetLinger(0); c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := tcpPair(t)
			s.SetDeadline(time.Now().Add(-time.Second)) // a deadline passed, as at a late turn
			tc.end(c)
			arrived(t, s)
			if !peerGone(s) {
				t.Fatal("peerGone = false")
			}
		})
	}
	t.Run("a peer that sent data and then closed is there until the data is read", func(t *testing.T) {
		c, s := tcpPair(t)
		c.Write([]byte("x"))
		c.CloseWrite()
		arrived(t, s)
		if peerGone(s) {
			t.Fatal("peerGone = true with a byte unread")
		}
		var b [1]byte
		if _, err := s.Read(b[:]); err != nil {
			t.Fatal(err)
		}
		arrived(t, s)
		if !peerGone(s) {
			t.Fatal("peerGone = false once the byte was read")
		}
	})
	t.Run("a conn that is no TCP socket is there", func(t *testing.T) {
		c, s := net.Pipe()
		c.Close()
		defer s.Close()
		if peerGone(s) {
			t.Fatal("peerGone = true on a net.Pipe")
		}
	})
}
