package pki

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// CertInfo describes one certificate of a certs directory.
type CertInfo struct {
	File     string    `json:"file"`     // base name of the file holding it
	Identity string    `json:"identity"` // the identity URI; for a CA spiffe://<cluster>; "" if none
	Kind     string    `json:"kind"`     // an identity Kind, "ca", or "unknown"
	Serial   string    `json:"serial"`   // hex
	NotAfter time.Time `json:"not_after"`
	// Issuer is the SHA-256 fingerprint (hex) of the CA of the directory
	// that signed it ("" if none did); a CA's own is its fingerprint.
	Issuer      string `json:"issuer_fingerprint"`
	Fingerprint string `json:"fingerprint"`
	Error       string `json:"error,omitempty"` // why the file could not be read or has no valid identity
}

// ListDir describes every certificate in the *.crt files of dir, sorted
// by file name (a bundle gives one entry per certificate).
func ListDir(dir string) ([]CertInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	type file struct {
		name  string
		certs []*x509.Certificate
		err   error
	}
	var files []file
	var cas []*x509.Certificate
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".crt") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		certs, err := ReadCerts(filepath.Join(dir, e.Name()))
		files = append(files, file{e.Name(), certs, err})
		for _, c := range certs {
			if c.IsCA {
				cas = append(cas, c)
			}
		}
	}
	var out []CertInfo
	for _, f := range files {
		if f.err != nil {
			out = append(out, CertInfo{File: f.name, Kind: "unknown", Error: f.err.Error()})
			continue
		}
		for _, c := range f.certs {
			info := CertInfo{File: f.name, Serial: c.SerialNumber.Text(16), NotAfter: c.NotAfter.UTC(), Fingerprint: Fingerprint(c)}
			if i := slices.IndexFunc(cas, func(ca *x509.Certificate) bool { return c.CheckSignatureFrom(ca) == nil }); i >= 0 {
				info.Issuer = Fingerprint(cas[i])
			}
			switch {
			case c.IsCA:
				info.Kind = "ca"
				if len(c.URIs) == 1 {
					info.Identity = c.URIs[0].String()
				}
			default:
				id, err := IdentityOf(c)
				if err != nil {
					info.Kind, info.Error = "unknown", err.Error()
				} else {
					info.Kind, info.Identity = string(id.Kind), id.String()
				}
			}
			out = append(out, info)
		}
	}
	return out, nil
}
