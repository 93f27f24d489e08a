// Package storetest runs real cells in one process for tests: N store
// nodes with raft-wal and Pebble on t.TempDir(), talking Raft over loopback
// TCP, with helpers to kill, restart, partition and heal nodes.
//
//	c := storetest.NewCluster(t, 3)
//	leader := c.Leader()
//	c.Partition([]int{leader.Index}, c.Others(leader.Index))
//	…
//	c.Heal()
//
// Everything is stopped by t.Cleanup. Component logs go to t.Log.
package storetest
