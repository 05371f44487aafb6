//go:build !race

package ratelimit_test

// keyedRace says whether the race detector is on: the flood tests then run
// on fewer keys.
const keyedRace = false
