package auth

import "testing"

func TestNewKeyRoundTrip(t *testing.T) {
	id, secret, hash, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := ID(secret)
	if !ok || got != id {
		t.Fatalf("ID(%q) = %q, %v; want %q", secret, got, ok, id)
	}
	if !Verify(secret, hash) {
		t.Fatal("Verify(secret, its hash) = false")
	}
	if Verify(secret+"x", hash) || Verify(secret, hash[:10]) {
		t.Fatal("Verify accepted a wrong secret or a short hash")
	}
	_, secret2, _, _ := NewKey()
	if secret2 == secret {
		t.Fatal("two keys with one secret")
	}
}

func TestIDRejects(t *testing.T) {
	for _, s := range []string{"", "cpk_", "abc", "cpk_0123456789abcdef", "cpk_0123456789abcdeX_rest", "xpk_0123456789abcdef_rest", "cpk_0123456789abcdef-rest"} {
		if id, ok := ID(s); ok {
			t.Errorf("ID(%q) = %q, true", s, id)
		}
	}
}

func FuzzID(f *testing.F) {
	f.Add("cpk_0123456789abcdef_xyz")
	f.Fuzz(func(t *testing.T, s string) {
		if id, ok := ID(s); ok && len(id) != idLen {
			t.Fatalf("ID(%q) = %q", s, id)
		}
	})
}
