package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cmd/cellplane/internal/devenv"
)

// TestDevBanner: with --mtls the banner gives the CELLPLANE_CONFIG line for
// cellctl and says the front door stays plaintext; without, it is as before.
func TestDevBanner(t *testing.T) {
	cfg := devenv.DefaultConfig()
	st := devenv.State{ControlPlane: "127.0.0.1:7000", RouterGRPC: "127.0.0.1:7100", RouterHTTP: "127.0.0.1:7180"}
	tests := []struct {
		name          string
		clientConfig  string
		want, wantNot []string
	}{
		{"plaintext", "", []string{"(cellctl --controlplane 127.0.0.1:7000)", "go run ./cmd/cellctl --controlplane 127.0.0.1:7000 status"}, []string{"CELLPLANE_CONFIG", "mutual TLS"}},
		{"mtls", "/d/client.yaml", []string{
			"(mutual TLS: CELLPLANE_CONFIG=/d/client.yaml cellctl status)",
			"CELLPLANE_CONFIG=/d/client.yaml go run ./cmd/cellctl status",
			"the router front door stays plaintext on loopback",
		}, []string{"--controlplane 127.0.0.1:7000 status"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := st
			s.ClientConfig = tc.clientConfig
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
