//go:build !linux

package cli

// kernelClockSynchronized is nil off Linux: the agent cannot tell, and its time floor holds.
var kernelClockSynchronized func() bool
