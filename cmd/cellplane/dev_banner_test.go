package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/devenv"
)

// TestDevBanner: with mutual TLS (the default) the banner gives the
// CELLPLANE_CONFIG line for cellctl and says the front door stays
// plaintext; with --tls it gives https and -cacert; with --insecure it says
// so and cellctl dials the control plane plaintext.
func TestDevBanner(t *testing.T) {
	cfg := devenv.DefaultConfig()
	st := devenv.State{ControlPlane: "127.0.0.1:7000", RouterGRPC: "127.0.0.1:7100", RouterHTTP: "127.0.0.1:7180"}
	tests := []struct {
		name          string
		clientConfig  string
		routerTLS     bool
		want, wantNot []string
	}{
		{"insecure", "", false, []string{"(cellctl --controlplane 127.0.0.1:7000)", "go run ./cmd/cellctl --controlplane 127.0.0.1:7000 status",
			"INSECURE", "grpcurl -plaintext"}, []string{"CELLPLANE_CONFIG", "mutual TLS"}},
		{"mtls", "/d/client.yaml", false, []string{
			"(mutual TLS: CELLPLANE_CONFIG=$(jq -r .client_config .cellplane-dev/dev.json) cellctl status)",
			"CELLPLANE_CONFIG=/d/client.yaml go run ./cmd/cellctl status",
			"the router front door stays plaintext on loopback (--tls for TLS)",
			"grpcurl -plaintext", "http://127.0.0.1:7180/t/<tenant>/mcp",
		}, []string{"--controlplane 127.0.0.1:7000 status", "INSECURE"}},
		{"tls", "/d/client.yaml", true, []string{
			"(TLS: trust /d/certs/ca.crt)", "grpcurl -cacert /d/certs/ca.crt", "https://127.0.0.1:7180/t/<tenant>/mcp",
			"the router front door serves TLS (--tls)",
		}, []string{"-plaintext", "INSECURE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := st
			s.ClientConfig, s.RouterTLS = tc.clientConfig, tc.routerTLS
			if tc.routerTLS {
				s.CA = "/d/certs/ca.crt"
			}
			var b bytes.Buffer
			printBanner(&b, cfg, s, time.Second)
			out := b.String()
			if !strings.HasPrefix(out, "cellplane dev is ready\n") {
				t.Errorf("first line changed:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("banner lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("banner has %q:\n%s", w, out)
				}
			}
		})
	}
}
