package etcdauth

import (
	"fmt"
	"os"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/pki"
)

// allows reports whether role lets its user read (or write) key, as etcd
// decides it: some range of the role holds the key (ranges are allow-only).
func allows(role Role, prefix, key string, write bool) bool {
	return allowsAbs(role, prefix, prefix+key, write)
}

// allowsAbs is allows for an absolute etcd key.
func allowsAbs(role Role, prefix, abs string, write bool) bool {
	if role.Root {
		return true
	}
	for _, r := range role.Ranges {
		if write && !r.Write {
			continue
		}
		k, e := r.abs(prefix)
		if abs == k || e != "" && abs >= k && abs < e {
			return true
		}
	}
	return false
}

// TestRoleRanges: what each role may read and write, key by key; the
// tokenkeys/private/ split in particular.
func TestRoleRanges(t *testing.T) {
	const prefix = "/cellplane/v1/"
	priv := TokenKeysPrivatePrefix + "k1"
	keys := []string{
		"", "regions/eu", "tenants/t1", "tenants/t1/keys/k", topo.CellKey("a"), topo.CellLoadKey("a"),
		topo.CellNodeKey("a", "n1"), topo.CellLeaderKey("a"), topo.CellBootstrapKey("a"), topo.CellAuthorityKey("a"),
		topo.CellFenceKey("a", "t1"), topo.CellNodeKey("b", "n1"), topo.CellLeaderKey("b"), topo.CellAuthorityKey("b"),
		topo.CellFenceKey("b", "t1"), topo.CellNodeKey("ab", "n1"), "workflows/w1", "controller/leader/1",
		"tokenkeys/public/k1", priv, TokenKeysPrivatePrefix, "tokenkeys/private", "tokenkeys/privatex", "zzz",
	}
	ownWrites := map[string]bool{
		topo.CellNodeKey("a", "n1"): true, topo.CellLeaderKey("a"): true, topo.CellBootstrapKey("a"): true,
		topo.CellAuthorityKey("a"): true, topo.CellFenceKey("a", "t1"): true,
	}
	isPrivate := func(k string) bool { return strings.HasPrefix(k, TokenKeysPrivatePrefix) }
	for _, tc := range []struct {
		id          pki.Identity
		read, write func(string) bool
	}{
		{pki.ControlPlaneIdentity("c", "cp1"), func(string) bool { return true }, func(string) bool { return true }},
		{pki.RouterIdentity("c", "r1"), func(string) bool { return true }, func(string) bool { return false }},
		{pki.WorkerIdentity("c", "w1"), func(k string) bool { return !isPrivate(k) }, func(string) bool { return false }},
		{pki.NodeIdentity("c", "eu", "a", "n1"), func(k string) bool { return !isPrivate(k) }, func(k string) bool { return ownWrites[k] }},
	} {
		role, err := RoleFor(tc.id, prefix)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if got, want := allows(role, prefix, k, false), tc.read(k); got != want {
				t.Errorf("%s read %q: %v, want %v", tc.id.Kind, k, got, want)
			}
			if got, want := allows(role, prefix, k, true), tc.write(k); got != want {
				t.Errorf("%s write %q: %v, want %v", tc.id.Kind, k, got, want)
			}
		}
		// Nothing outside the prefix.
		for _, abs := range []string{"/cellplane/v0/tenants/t1", "/cellplane/v1", "/cellplane/v10/x", "/other", "0"} {
			if !role.Root && allowsAbs(role, prefix, abs, false) {
				t.Errorf("%s reads %s, outside the prefix", tc.id.Kind, abs)
			}
		}
	}
	for _, id := range []pki.Identity{pki.OperatorIdentity("c", pki.RoleAdmin, "alice"), pki.ClientIdentity("c", "t1")} {
		if _, err := RoleFor(id, prefix); err == nil {
			t.Errorf("RoleFor(%s) gave a role", id)
		}
	}
}

// docRow renders a kind's row of docs/security.md's etcd table.
func docRow(id pki.Identity, user string) string {
	role, err := RoleFor(id, "/cellplane/v1/")
	if err != nil {
		return fmt.Sprintf("| %s | none | none | none | none |", id.Kind)
	}
	if role.Root {
		return fmt.Sprintf("| %s | `%s` | `root` | everything | everything (users, roles, auth too) |", id.Kind, user)
	}
	var read, write []string
	for _, r := range role.Ranges {
		if r.Write {
			write = append(write, "`"+r.String()+"`")
		} else {
			read = append(read, "`"+r.String()+"`")
		}
	}
	if len(write) == 0 {
		write = []string{"nothing"}
	}
	return fmt.Sprintf("| %s | `%s` | `%s` | %s | %s |", id.Kind, user, role.Name, strings.Join(read, ", "), strings.Join(write, ", "))
}

// TestRolesDocumented: docs/security.md's etcd table is RoleFor's.
func TestRolesDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## etcd (mutual TLS and RBAC)\n")
	if !ok {
		t.Fatal(`docs/security.md has no "## etcd (mutual TLS and RBAC)" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rows := map[string]bool{}
	for _, r := range []struct {
		id   pki.Identity
		user string
	}{
		{pki.ControlPlaneIdentity("c", "<id>"), "controlplane.<id>"},
		{pki.RouterIdentity("c", "<id>"), "router.<id>"},
		{pki.WorkerIdentity("c", "<id>"), "worker.<id>"},
		{pki.NodeIdentity("c", "<r>", "<c>", "<n>"), "node.<r>.<c>.<n>"},
		{pki.OperatorIdentity("c", pki.RoleAdmin, "<name>"), ""},
		{pki.ClientIdentity("c", "<t>"), ""},
	} {
		row := docRow(r.id, r.user)
		rows[row] = true
		if !strings.Contains(section, row+"\n") {
			t.Errorf("the etcd section lacks the row\n%s", row)
		}
	}
	for _, line := range strings.Split(section, "\n") {
		if strings.HasPrefix(line, "| ") && !strings.HasPrefix(line, "| identity") && !strings.HasPrefix(line, "|---") && !rows[line] {
			t.Errorf("the etcd section has a row RoleFor does not: %s", line)
		}
	}
}

// TestPrintRows prints the rows (go test -run TestPrintRows -v) to paste
// into docs/security.md.
func TestPrintRows(t *testing.T) {
	if !testing.Verbose() {
		t.Skip("-v prints the docs rows")
	}
	t.Log("\n" + docRow(pki.ControlPlaneIdentity("c", "<id>"), "controlplane.<id>") + "\n" +
		docRow(pki.RouterIdentity("c", "<id>"), "router.<id>") + "\n" +
		docRow(pki.WorkerIdentity("c", "<id>"), "worker.<id>") + "\n" +
		docRow(pki.NodeIdentity("c", "<r>", "<c>", "<n>"), "node.<r>.<c>.<n>") + "\n" +
		docRow(pki.OperatorIdentity("c", pki.RoleAdmin, "<name>"), "") + "\n" +
		docRow(pki.ClientIdentity("c", "<t>"), ""))
}

// prefixEnd is etcd's own range end of a prefix.
func TestPrefixEnd(t *testing.T) {
	for _, p := range []string{"/cellplane/v1/", "a", "a\xff", "\xff\xff", "cells/c1/nodes/", ""} {
		if got, want := prefixEnd(p), clientv3.GetPrefixRangeEnd(p); got != want {
			t.Errorf("prefixEnd(%q) = %q, want %q", p, got, want)
		}
	}
}

// FuzzPrefixEnd: prefixEnd is etcd's range end for any prefix, and every
// key beginning with the prefix falls in [prefix, end).
func FuzzPrefixEnd(f *testing.F) {
	for _, s := range []string{"/cellplane/v1/", "a\xff", "\xff", "", "tokenkeys/private/"} {
		f.Add(s, "x")
	}
	f.Fuzz(func(t *testing.T, p, rest string) {
		end := prefixEnd(p)
		if want := clientv3.GetPrefixRangeEnd(p); end != want {
			t.Fatalf("prefixEnd(%q) = %q, want %q", p, end, want)
		}
		if k := p + rest; end != "\x00" && (k < p || k >= end) {
			t.Fatalf("%q is outside [%q, %q)", k, p, end)
		}
	})
}
