package main

import (
	"strings"
	"testing"
)

// The router's and the worker's --certs-dir / --cert-name: their
// identities for the calls into cells (C1, C2), refused clearly when
// unusable.
func TestComponentTLSFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"cert", "create-ca", "--cluster", "prod", "--certs-dir", dir},
		{"cert", "create-router", "--id", "r1", "--certs-dir", dir},
		{"cert", "create-router", "--id", "r2", "--certs-dir", dir},
		{"cert", "create-worker", "--id", "w1", "--certs-dir", dir},
	} {
		if r := runCmd(t.Context(), args...); r.code != 0 {
			t.Fatalf("%v: exit %d, %s", args, r.code, r.err)
		}
	}
	empty := t.TempDir()
	router := []string{"router", "--etcd-endpoints", "http://127.0.0.1:1"}
	worker := []string{"worker", "--id", "w9", "--cell", "c1", "--etcd-endpoints", "http://127.0.0.1:1"}
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"router: name without dir", append(router, "--cert-name", "router.r1"), "--cert-name needs --certs-dir"},
		{"router: no certificate", append(router, "--certs-dir", empty), "holds no router certificate"},
		{"router: several", append(router, "--certs-dir", dir), "holds several router certificates (router.r1.crt, router.r2.crt): choose one with --cert-name"},
		{"router: a worker's", append(router, "--certs-dir", dir, "--cert-name", "worker.w1"), "is not a router's"},
		{"worker: name without dir", append(worker, "--cert-name", "worker.w1"), "--cert-name needs --certs-dir"},
		{"worker: none of this id", append(worker, "--certs-dir", dir), "worker.w9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 2 || !strings.Contains(r.err, tt.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", r.code, r.err, tt.want)
			}
		})
	}
}
