package sim

import "errors"

// ErrConfig is matched (errors.Is) by every configuration error Run returns.
var ErrConfig = errors.New("fleetsim: bad configuration")

// Sentinel errors of a run that completed but failed its promise. Run returns the report with
// them (joined when both apply).
var (
	// ErrNotConverged: some devices had not converged when the run's timeout passed.
	ErrNotConverged = errors.New("fleetsim: devices not converged")
	// ErrCommandsLost: some signed pings were never answered.
	ErrCommandsLost = errors.New("fleetsim: commands lost")
)
