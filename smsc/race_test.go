//go:build race

package smsc_test

// raceDetector is true when the tests run under -race, which makes the
// outbox's many goroutines ten to twenty times slower: the largest bursts
// are then scaled down to keep the package within go test's timeout.
const raceDetector = true
