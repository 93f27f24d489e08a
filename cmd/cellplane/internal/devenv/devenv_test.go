package devenv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrepareDir(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(dir string)
		reset   bool
		wantErr string
	}{
		{"new dir", func(string) {}, false, ""},
		{"our dir", func(d string) { _ = os.WriteFile(filepath.Join(d, "VERSION"), []byte(Version+"\n"), 0o644) }, false, ""},
		{"another version", func(d string) { _ = os.WriteFile(filepath.Join(d, "VERSION"), []byte("cellplane-dev/0\n"), 0o644) }, false, "incompatible version"},
		{"another version, reset", func(d string) { _ = os.WriteFile(filepath.Join(d, "VERSION"), []byte("cellplane-dev/0\n"), 0o644) }, true, ""},
		{"foreign files", func(d string) { _ = os.WriteFile(filepath.Join(d, "notes.txt"), []byte("x"), 0o644) }, false, "not made by cellplane dev"},
		{"not usable", func(d string) { _ = os.RemoveAll(d); _ = os.WriteFile(d, []byte("a file"), 0o644) }, false, "not usable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "dev")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			tc.setup(dir)
			err := prepareDir(dir, tc.reset)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("prepareDir: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("prepareDir = %v, want an error about %q", err, tc.wantErr)
			case tc.wantErr == "":
				b, _ := os.ReadFile(filepath.Join(dir, "VERSION"))
				if strings.TrimSpace(string(b)) != Version {
					t.Fatalf("VERSION = %q", b)
				}
			}
		})
	}
}

func TestValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no regions":   func(c *Config) { c.Regions = nil },
		"even nodes":   func(c *Config) { c.NodesPerCell = 2 },
		"27 cells":     func(c *Config) { c.CellsPerRegion = 27 },
		"port too low": func(c *Config) { c.NodeBasePort = 80 },
		"bad auth":     func(c *Config) { c.Auth = "jwt" },
		"no cells":     func(c *Config) { c.CellsPerRegion = 0 },
		"free ports":   func(c *Config) { c.NodeBasePort = 0 },
	} {
		c := DefaultConfig()
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: Validate passed", name)
		}
	}
}
