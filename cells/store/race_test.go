//go:build race

package store

// raceEnabled: tests whose size makes them minutes long under the race
// detector (the HNSW build of TestVectorIndexRecall) run smaller there.
const raceEnabled = true
