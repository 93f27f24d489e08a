//go:build race

package chaos

// raceEnabled: the longest scenarios skip in the -race pass (CI budget) unless
// CELLPLANE_CHAOS_ALL is set (the default run covers them).
const raceEnabled = true
