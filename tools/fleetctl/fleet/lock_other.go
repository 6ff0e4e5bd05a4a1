//go:build !unix

package fleet

// lockDir does nothing where flock(2) does not exist: there, renewals by two processes at once
// may leave a key that is not the certificate's, which the next load renews again.
func lockDir(string) (func(), error) { return func() {}, nil }

// tryLock does nothing where flock(2) does not exist: there, a second signer instance of one
// name is not refused.
func tryLock(string) (func(), bool, error) { return func() {}, false, nil }
