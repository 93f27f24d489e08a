//go:build race

package router_test

// raceEnabled: the race detector slows every call several times and
// unevenly, so latency bounds are not checked under it.
const raceEnabled = true
