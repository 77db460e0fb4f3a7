package media

import "time"

// SetClock replaces the service's clock (tests of expiry).
func SetClock(s *Service, now func() time.Time) { s.now = now }
