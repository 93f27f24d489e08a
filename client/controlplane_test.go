package client

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cellplane/cellplane/internal/pki"
)

// The one precedence of cellctl and the Terraform provider: explicit >
// CELLPLANE_CONTROLPLANE > the file (explicit path > CELLPLANE_CONFIG) >
// the default; explicit TLS settings replace the file's as a whole.
func TestResolveControlPlaneTarget(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("controlplane: file:7000\nca: ca.crt\ncert: op.crt\nkey: op.key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile := ControlPlaneTarget{Addr: "file:7000", CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "op.crt"), Key: filepath.Join(dir, "op.key")}
	for _, tc := range []struct {
		name            string
		envFile, envCP  string
		in              ControlPlaneTarget
		addrSet, tlsSet bool
		path            string
		want            ControlPlaneTarget
	}{
		{name: "default", want: ControlPlaneTarget{Addr: DefaultControlPlaneAddr}},
		{name: "env file", envFile: file, want: fromFile},
		{name: "explicit file", path: file, want: fromFile},
		{name: "env address over the file", envFile: file, envCP: "env:7000",
			want: ControlPlaneTarget{Addr: "env:7000", CA: fromFile.CA, Cert: fromFile.Cert, Key: fromFile.Key}},
		{name: "explicit address over env", envFile: file, envCP: "env:7000", in: ControlPlaneTarget{Addr: "flag:7000"}, addrSet: true,
			want: ControlPlaneTarget{Addr: "flag:7000", CA: fromFile.CA, Cert: fromFile.Cert, Key: fromFile.Key}},
		{name: "explicit TLS replaces the file's", envFile: file, in: ControlPlaneTarget{CA: "/ca.pem"}, tlsSet: true,
			want: ControlPlaneTarget{Addr: "file:7000", CA: "/ca.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvConfigFile, tc.envFile)
			t.Setenv(EnvControlPlane, tc.envCP)
			got, err := ResolveControlPlaneTarget(tc.in, tc.addrSet, tc.tlsSet, tc.path)
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	t.Setenv(EnvConfigFile, filepath.Join(dir, "missing.yaml"))
	if _, err := ResolveControlPlaneTarget(ControlPlaneTarget{}, false, false, ""); err == nil {
		t.Fatal("a missing configuration file resolved")
	}
}

// A certs dir without (or with several) operator certificates is a
// settings mistake: errors.Is(err, ErrTargetConfig).
func TestControlPlaneTargetCertsDir(t *testing.T) {
	dir := t.TempDir()
	_, err := ControlPlaneTarget{CertsDir: dir}.Credentials(pki.KindControlPlane)
	if !errors.Is(err, ErrTargetConfig) {
		t.Fatalf("empty certs dir: %v, want ErrTargetConfig", err)
	}
	for _, n := range []string{"operator.a.crt", "operator.b.crt"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := (ControlPlaneTarget{CertsDir: dir}).Credentials(pki.KindControlPlane); !errors.Is(err, ErrTargetConfig) {
		t.Fatalf("two operator certificates: %v, want ErrTargetConfig", err)
	}
	if _, err := (ControlPlaneTarget{}).Credentials(pki.KindControlPlane); err != nil {
		t.Fatalf("plaintext: %v", err)
	}
}
