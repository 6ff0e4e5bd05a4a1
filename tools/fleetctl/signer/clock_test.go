package signer_test

import (
	"time"

	"github.com/camagent/camagent/internal/clock/clocktest"
)

func newClock(t time.Time) *clocktest.Fake { return clocktest.New(t) }
