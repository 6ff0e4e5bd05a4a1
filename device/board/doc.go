// Package board tells which board the agent runs on: its model and its hardware serial
// number, for the QA self-test, local logs and the local status display.
//
// On a Raspberry Pi the serial comes from the device tree (/proc/device-tree/serial-number) or,
// on older firmware, from the "Serial" line of /proc/cpuinfo, and the model from
// /proc/device-tree/model (or the "Model" line of /proc/cpuinfo). Elsewhere the model is
// "unknown" unless the device tree names one, and the serial falls back to a value derived from
// /etc/machine-id: the first 16 hex digits of HMAC-SHA256(machine-id, "camagent board serial"),
// so the machine-id itself, which machine-id(5) asks to keep confidential, is never exposed.
//
// The serial is device-local. It identifies the hardware for the person holding it (the QA
// bench, a support call with the device in hand) and must never leave the device on its own:
// the device id used in the fleet, in certificates and on the broker, is separate and assigned
// at enrollment, and nothing in an outbound message is derived from the serial. Identity's
// String and LogValue leave the serial out for that reason; code that needs it reads the field.
//
// Readers take the root of the file system as an fs.FS, so tests feed fixture trees. The
// package only reads local files: no network, no writes.
package board
