// Package replication will hold tenant change streams, standby apply and
// lag accounting (DESIGN §8). It is built by the replication issue; the
// per-tenant change log it reads already exists in cells/store.
package replication
