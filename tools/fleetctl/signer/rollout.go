package signer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/camagent/camagent/internal/atomicfile"
	"github.com/camagent/camagent/internal/strictjson"
	"github.com/camagent/camagent/tools/fleetctl/registry"
)

// RolloutState is the rollout-control state every signer of a fleet directory shares, kept
// in a small JSON file beside the registry. A signer that finds the rollout aborted issues
// nothing new until `fleetctl rollout resume`.
type RolloutState struct {
	// Aborted is set when the failure ratio passed Config.AbortRatio.
	Aborted bool `json:"aborted"`
	// Reason says why, with the figures, for the operator.
	Reason string `json:"reason,omitempty"`
	// AbortedAt is when the rollout was aborted.
	AbortedAt time.Time `json:"aborted_at,omitzero"`
	// ResumedAt is when the operator last resumed: certificates issued before it no longer
	// count towards the abort threshold.
	ResumedAt time.Time `json:"resumed_at,omitzero"`
	// Issued and Failed are the counts that made the signer abort.
	Issued int `json:"issued,omitempty"`
	Failed int `json:"failed,omitempty"`
}

// LoadRollout reads the rollout state at path; a missing file is a rollout that was never
// aborted.
func LoadRollout(path string) (RolloutState, error) {
	st, parseErr, err := loadRollout(path)
	if err == nil {
		err = parseErr
	}
	return st, err
}

// loadRollout is LoadRollout telling a file that cannot be read (err) from one that does not
// parse (parseErr).
func loadRollout(path string) (st RolloutState, parseErr, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil, nil
	}
	if err != nil {
		return st, nil, fmt.Errorf("signer: rollout state: %w", err)
	}
	if err := strictjson.Unmarshal(b, &st); err != nil {
		return RolloutState{}, fmt.Errorf("signer: rollout state %s: %w", path, err), nil
	}
	return st, nil, nil
}

func saveRollout(path string, st RolloutState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("signer: rollout state: %w", err)
	}
	if err := atomicfile.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("signer: rollout state: %w", err)
	}
	return nil
}

// Resume clears an aborted rollout at path, under the registry's lock so that no signer is
// deciding meanwhile, and returns the state before and after. Certificates issued before now no
// longer count towards the abort threshold. A state that does not parse, which the signers
// treat as aborted, is cleared too: before then says why it was.
func Resume(reg *registry.Registry, path string, now time.Time) (before, after RolloutState, err error) {
	err = reg.Update(func(*registry.Tx) error {
		var parseErr error
		if before, parseErr, err = loadRollout(path); err != nil {
			return err
		}
		if parseErr != nil {
			before = RolloutState{Aborted: true, Reason: fmt.Sprintf("the rollout state was unreadable (%v)", parseErr)}
		}
		after = RolloutState{ResumedAt: now.UTC()}
		return saveRollout(path, after)
	})
	return before, after, err
}
