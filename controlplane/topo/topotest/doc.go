// Package topotest is the conformance suite of topo.Store implementations
// and the helpers that start a real (embedded) etcd for tests.
//
//	func TestConformance(t *testing.T) {
//		topotest.Run(t, func(t *testing.T) topo.Store { return memtopo.New() })
//	}
//
//	func TestEtcd(t *testing.T) {
//		st := topotest.NewEtcdStore(t) // fresh etcd on loopback, stopped on cleanup
//		...
//	}
//
// Run compacts history through the optional Compacter interface; a store
// without it skips the compaction subtests.
package topotest
