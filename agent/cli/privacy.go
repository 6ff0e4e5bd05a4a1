package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/camagent/camagent/agent"
	"github.com/camagent/camagent/agent/privacy/onboard"
)

// onboardCmd seals the setup payload. The payload is read from a file or standard input,
// never from an argument: arguments are visible to every local user in /proc and stay in
// shell history.
func onboardCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("camagent onboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("state", defaultStateDir, "state directory (0700)")
	file := fs.String("file", "", "the setup payload (CAMSETUP:… text from the phone app's QR code), or - for standard input")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// Not quoted: it may be the payload itself, passphrase included.
		return errors.New("onboard: unexpected argument: the payload is read from --file F or from standard input (--file -), never from an argument")
	}
	var s onboard.Setup
	var err error
	switch {
	case *file == "":
		return errors.New("onboard: --file is required (a file, or - for standard input)")
	case looksLikePayload(*file):
		// The QR text pasted where a file name belongs: not quoted, since it holds the
		// passphrase, and an error may end up in a log or a support bundle.
		return errors.New("onboard: --file takes the name of a file holding the payload, not the payload itself; pipe the payload in with --file - instead")
	case *file == "-":
		b, rerr := io.ReadAll(io.LimitReader(stdin, onboard.MaxPayload+1))
		if rerr != nil {
			return fmt.Errorf("onboard: standard input: %w", rerr)
		}
		s, err = onboard.Parse(b)
	default:
		s, err = onboard.ReadFile(*file)
		if pe := (*iofs.PathError)(nil); errors.As(err, &pe) {
			// Without the name given, which need not be a file name at all (see above).
			return fmt.Errorf("onboard: --file: %s: %w", pe.Op, pe.Err)
		}
	}
	if err != nil {
		return err
	}
	if err := agent.Onboard(*dir, s); err != nil {
		return err
	}
	// Setup's String leaves out the network name, passphrase and nickname.
	fmt.Fprintf(stdout, "onboarded: %v (sealed in %s; only the claim token will be sent to the cloud)\n", s, *dir)
	fmt.Fprintln(stdout, "onboard: a running agent takes the new settings at its next connect, or at once when reloaded (systemctl reload camagent)")
	return nil
}

// looksLikePayload reports whether a --file value is a setup payload (or a Wi-Fi QR text)
// rather than a file name.
func looksLikePayload(v string) bool {
	u := strings.ToUpper(v)
	return strings.Contains(u, onboard.Prefix) || strings.HasPrefix(u, "WIFI:")
}

// resetCmd is the factory reset.
func resetCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("camagent reset", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("state", defaultStateDir, "state directory")
	yes := fs.Bool("yes", false, "really wipe: the device forgets its identity and settings and must be enrolled again")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !*yes {
		return errors.New("reset: this wipes the device's keys, token, sealed settings and journal, and it must then be enrolled again; stop the agent and pass --yes")
	}
	if _, err := os.Stat(*dir); err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	l, err := agent.LockState(*dir)
	if err != nil {
		return fmt.Errorf("reset: %w", err)
	}
	defer l.Unlock()
	left, err := agent.Reset(*dir)
	if err != nil {
		return err
	}
	// Nothing is left, the lock file either: this process is its last user, and leaves.
	os.Remove(filepath.Join(*dir, agent.LockFile))
	fmt.Fprintf(stdout, "reset: %s wiped; enroll the device again to use it\n", *dir)
	if len(left) > 0 {
		fmt.Fprintf(stdout, "reset: left alone (not the agent's): %v\n", left)
	}
	return nil
}
