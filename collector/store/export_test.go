package store

import "time"

// SetClock replaces the clock of the token cache.
func SetClock(s *Store, now func() time.Time) { s.now = now }
