package webrtc

// ClipAUs gives the external tests the committed clip's access units (see clipAUs).
var ClipAUs = clipAUs
