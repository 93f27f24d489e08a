package controlplane

import (
	"crypto/x509"
	"slices"
	"testing"
)

// TestCAFingerprints: the set of CAs, whatever the bundle's order and
// duplicates; different CAs differ.
func TestCAFingerprints(t *testing.T) {
	a, b := &x509.Certificate{Raw: []byte("ca-a")}, &x509.Certificate{Raw: []byte("ca-b")}
	for _, tc := range []struct {
		name  string
		x, y  []*x509.Certificate
		equal bool
	}{
		{"same order", []*x509.Certificate{a, b}, []*x509.Certificate{a, b}, true},
		{"other order", []*x509.Certificate{a, b}, []*x509.Certificate{b, a}, true},
		{"duplicate", []*x509.Certificate{a, a}, []*x509.Certificate{a}, true},
		{"one added", []*x509.Certificate{a}, []*x509.Certificate{b, a}, false},
		{"one dropped", []*x509.Certificate{a, b}, []*x509.Certificate{b}, false},
		{"other CA", []*x509.Certificate{a}, []*x509.Certificate{b}, false},
		{"none", nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := slices.Equal(caFingerprints(tc.x), caFingerprints(tc.y)); got != tc.equal {
				t.Fatalf("equal = %v, want %v", got, tc.equal)
			}
		})
	}
}
