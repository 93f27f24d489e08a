// Package controlplane will hold the controller: placement, registry and
// durable workflows on etcd (DESIGN §5). It is built by the control-plane
// issue; nothing is here yet.
package controlplane
