package contacts

import "github.com/phonebook/phonebook/store"

// PushStatusForTest queues st's presence as the service does after reading
// it from the store (as when two users become mutual).
func (s *Service) PushStatusForTest(st store.Status) { s.push.presence(st) }
