package validate

import (
	"strings"

	"github.com/cellplane/cellplane/internal/ids"
)

// A member's Raft server id is its node id when it founded its cell, and
// "<node id>" + IncarnationSep + IncarnationHex lowercase hex digits when
// it joined with an empty data dir (a new incarnation: H1, "no Raft
// amnesia"; cells/store/identity.go).
const (
	IncarnationSep = ".inc-"
	IncarnationHex = 16
)

// MaxRaftIDLen is the longest Raft server id: a node id of ids.MaxLen
// characters plus an incarnation.
const MaxRaftIDLen = ids.MaxLen + len(IncarnationSep) + IncarnationHex

// SplitRaftID splits a Raft server id into the node id and the
// incarnation ("" for a founding member's id, which is the node id).
func SplitRaftID(id string) (node, inc string) {
	i := strings.LastIndex(id, IncarnationSep)
	if i <= 0 {
		return id, ""
	}
	h := id[i+len(IncarnationSep):]
	if len(h) != IncarnationHex {
		return id, ""
	}
	for j := 0; j < len(h); j++ {
		if c := h[j]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return id, ""
		}
	}
	return id[:i], h
}

// RaftIDOf reports whether raftID is a valid Raft server id of node.
func RaftIDOf(node, raftID string) bool {
	if !ids.Valid(node, ids.MaxLen) || !ids.Valid(raftID, MaxRaftIDLen) {
		return false
	}
	n, inc := SplitRaftID(raftID)
	return n == node && (inc != "" || raftID == node)
}
