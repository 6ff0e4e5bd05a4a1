package gpio

// Resolve exposes resolve, Open's lookup of pin names, to the tests.
var Resolve = resolve
