package store

import (
	"testing"

	"github.com/hashicorp/raft"
)

func TestRankAmong(t *testing.T) {
	voters := func(ids ...raft.ServerID) []raft.Server {
		var s []raft.Server
		for _, id := range ids {
			s = append(s, raft.Server{ID: id, Suffrage: raft.Voter})
		}
		return s
	}
	withNonvoter := append(voters("n3", "n1", "n2"), raft.Server{ID: "n0", Suffrage: raft.Nonvoter})
	for name, tc := range map[string]struct {
		servers      []raft.Server
		leader, self raft.ServerID
		rank         int
		ok           bool
	}{
		"first of the others":          {voters("n3", "n1", "n2"), "n2", "n1", 0, true},
		"second of the others":         {voters("n3", "n1", "n2"), "n2", "n3", 1, true},
		"leader gone from the middle":  {voters("n1", "n2", "n3", "n4", "n5"), "n3", "n4", 2, true},
		"non-voters are not ranked":    {withNonvoter, "n1", "n2", 0, true},
		"a non-voter has no rank":      {withNonvoter, "n1", "n0", -1, false},
		"not in the configuration":     {voters("n1", "n2", "n3"), "n1", "n9", -1, false},
		"incarnation ids sort as text": {voters("n1.inc-ab", "n2", "n1"), "n1", "n1.inc-ab", 0, true},
	} {
		t.Run(name, func(t *testing.T) {
			rank, ok := rankAmong(tc.servers, tc.leader, tc.self)
			if rank != tc.rank || ok != tc.ok {
				t.Fatalf("rankAmong = %d, %v; want %d, %v", rank, ok, tc.rank, tc.ok)
			}
		})
	}
}
