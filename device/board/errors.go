package board

import "errors"

// ErrNoSerial is returned by Read when neither the device tree, nor /proc/cpuinfo, nor
// /etc/machine-id yields a serial. The Identity returned with it still has the model.
var ErrNoSerial = errors.New("board: no serial number: no device tree serial, no cpuinfo serial, no machine-id")
