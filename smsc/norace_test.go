//go:build !race

package smsc_test

const raceDetector = false
