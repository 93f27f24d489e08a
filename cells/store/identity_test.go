package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRaftIDs(t *testing.T) {
	id, err := NewRaftID("n1.a")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id, node string
		inc      bool
	}{
		{"n1", "n1", false},
		{"n1.a", "n1.a", false},
		{id, "n1.a", true},
		{"n1.inc-0123456789abcdef", "n1", true},
		{"n1.inc-0123456789ABCDEF", "n1.inc-0123456789ABCDEF", false}, // upper case: not an incarnation
		{"n1.inc-0123", "n1.inc-0123", false},
		{".inc-0123456789abcdef", ".inc-0123456789abcdef", false},
	} {
		if got := NodeOfRaftID(tc.id); got != tc.node {
			t.Errorf("NodeOfRaftID(%q) = %q, want %q", tc.id, got, tc.node)
		}
		if got := HasIncarnation(tc.id); got != tc.inc {
			t.Errorf("HasIncarnation(%q) = %v, want %v", tc.id, got, tc.inc)
		}
		if !ValidRaftID(tc.id) && tc.id[0] != '.' {
			t.Errorf("ValidRaftID(%q) = false", tc.id)
		}
	}
	if a, _ := NewRaftID("n1"); a == id || !strings.HasPrefix(a, "n1.inc-") {
		t.Errorf("NewRaftID = %q", a)
	}
}

func TestIdentityFile(t *testing.T) {
	dir := t.TempDir()
	if _, ok, err := ReadIdentity(dir); ok || err != nil {
		t.Fatalf("ReadIdentity of an empty dir = %v, %v", ok, err)
	}
	want := Identity{NodeID: "n2", RaftID: "n2.inc-00112233445566ff"}
	if err := writeIdentity(dir, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadIdentity(dir)
	if err != nil || !ok || got != want {
		t.Fatalf("ReadIdentity = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	for name, content := range map[string]string{
		"not json":       "n2",
		"wrong version":  `{"version":2,"node_id":"n2","raft_id":"n2"}`,
		"other node":     `{"version":1,"node_id":"n2","raft_id":"n3"}`,
		"bad incarnaton": `{"version":1,"node_id":"n2","raft_id":"n2.inc-xyz"}`,
		"unknown field":  `{"version":1,"node_id":"n2","raft_id":"n2","x":1}`,
		"trailing":       `{"version":1,"node_id":"n2","raft_id":"n2"} {}`,
		"empty":          ``,
		"too large":      strings.Repeat(" ", maxIdentityBytes+1),
	} {
		if err := os.WriteFile(filepath.Join(dir, IdentityFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadIdentity(dir); !errors.Is(err, ErrIdentity) {
			t.Errorf("%s: ReadIdentity = %v, want ErrIdentity", name, err)
		}
	}
}

// FuzzDecodeIdentity: the identity file decoder never panics, and what it
// accepts is a valid identity that encodes back to an equal one.
func FuzzDecodeIdentity(f *testing.F) {
	f.Add(encodeIdentity(Identity{NodeID: "n1", RaftID: "n1"}))
	f.Add(encodeIdentity(Identity{NodeID: "n1", RaftID: "n1.inc-0123456789abcdef"}))
	f.Add([]byte(`{"version":1,"node_id":"a.inc-0123456789abcdef","raft_id":"a.inc-0123456789abcdef"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := decodeIdentity(b)
		if err != nil {
			if !errors.Is(err, ErrIdentity) {
				t.Fatalf("error %v does not wrap ErrIdentity", err)
			}
			return
		}
		if !validRaftIDOf(id.NodeID, id.RaftID) || NodeOfRaftID(id.RaftID) != id.NodeID {
			t.Fatalf("accepted an invalid identity %+v", id)
		}
		again, err := decodeIdentity(encodeIdentity(id))
		if err != nil || again != id {
			t.Fatalf("round trip of %+v = %+v, %v", id, again, err)
		}
	})
}
