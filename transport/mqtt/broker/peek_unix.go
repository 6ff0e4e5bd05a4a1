//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd || solaris

package broker

import (
	"errors"
	"net"
	"syscall"
)

// peerGone reports whether the peer of c has already closed its end (a FIN received, and no
// data left unread) or reset it, without reading anything or waiting: a recv(2) of one byte
// with MSG_PEEK|MSG_DONTWAIT on the socket, which returns 0 at the end of the stream,
// ECONNRESET after a reset, EAGAIN when the peer is there and has sent nothing more, and the
// byte, left in the socket, when it has. A TLS client never closes its end before its
// handshake is done, so one that did has left. Anything but a *net.TCPConn, and any other
// answer, counts as there.
//
// It goes through SyscallConn().Control rather than Read, which refuses once the socket's
// deadline has passed: the deadline set at accept may have, by the time a queued connection's
// turn comes.
func peerGone(c net.Conn) bool {
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	err = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		gone = (n == 0 && err == nil) || errors.Is(err, syscall.ECONNRESET)
	})
	return err == nil && gone
}
