package store

import "testing"

func TestSmoke(t *testing.T) {
	s := openSingle(t, "")
	setOwner(t, s, "acme", 1)
	mustPropose(t, s, createContext("acme", "c1"))
	res := mustPropose(t, s, appendText("acme", "c1", "r1", "hello", "world"))
	if a := res.GetAppend(); a.GetFirstSeq() != 1 || a.GetLastSeq() != 2 {
		t.Fatalf("append = %v", a)
	}
	got := readAll(t, s, "acme", "c1")
	if len(got) != 2 || got[1].GetText() != "world" || got[1].GetSeq() != 2 {
		t.Fatalf("entries = %v", got)
	}
}
