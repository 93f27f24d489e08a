package auth

import "testing"

func TestNewKeyRoundTrip(t *testing.T) {
	id, secret, hash, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	got, ok := KeyID(secret)
	if !ok || got != id {
		t.Fatalf("KeyID(%q) = %q, %v; want %q", secret, got, ok, id)
	}
	if !VerifyKey(secret, hash) {
		t.Fatal("VerifyKey(secret, its hash) = false")
	}
	if VerifyKey(secret+"x", hash) || VerifyKey(secret, hash[:10]) {
		t.Fatal("VerifyKey accepted a wrong secret or a short hash")
	}
	_, secret2, _, _ := NewKey()
	if secret2 == secret {
		t.Fatal("two keys with one secret")
	}
}

func TestKeyIDRejects(t *testing.T) {
	for _, s := range []string{"", "cpk_", "abc", "cpk_0123456789abcdef", "cpk_0123456789abcdeX_rest", "xpk_0123456789abcdef_rest", "cpk_0123456789abcdef-rest"} {
		if id, ok := KeyID(s); ok {
			t.Errorf("KeyID(%q) = %q, true", s, id)
		}
	}
}

func FuzzKeyID(f *testing.F) {
	f.Add("cpk_0123456789abcdef_xyz")
	f.Fuzz(func(t *testing.T, s string) {
		if id, ok := KeyID(s); ok && len(id) != keyIDLen {
			t.Fatalf("KeyID(%q) = %q", s, id)
		}
	})
}
