package main

import (
	"os"
	"testing"
)

// soakEnv turns the fault tests' short forms, which `make test` runs, into
// the long ones `make soak` runs: more kills, more restarts, longer outages.
const soakEnv = "ANYSCOPE_SOAK"

// soak reports whether the long forms were asked for (ANYSCOPE_SOAK set to
// anything but "" or "0").
func soak() bool {
	v := os.Getenv(soakEnv)
	return v != "" && v != "0"
}

// scaled returns short, or long under ANYSCOPE_SOAK, and logs which.
func scaled[T any](t *testing.T, what string, short, long T) T {
	t.Helper()
	if soak() {
		t.Logf("%s: %v (long form, %s set)", what, long, soakEnv)
		return long
	}
	return short
}
