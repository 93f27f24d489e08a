package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cellplane/cellplane/cells/validate"
)

// IdentityFile is the file in a node's data dir that holds the Raft
// server id the node's Raft state belongs to (H1, "no Raft amnesia").
//
// A node's Raft server id is its node id when the node founded its cell
// (so every cell formed before the file existed keeps working), and
// "<node-id>.inc-<16 hex digits>" — a fresh, random incarnation — when
// the node starts with no Raft state in a cell that already exists. A
// node whose disk was lost therefore never answers under the id its
// peers counted votes and acknowledgements from: it joins as a new
// member, and the old incarnation is removed (docs/reliability.md,
// "Raft amnesia (H1)").
const IdentityFile = "identity"

// MaxRaftIDLen is the longest Raft server id.
const MaxRaftIDLen = validate.MaxRaftIDLen

// maxIdentityBytes bounds the identity file a node reads.
const maxIdentityBytes = 4 << 10

// Identity is the content of a data dir's identity file.
type Identity struct {
	// NodeID is the node the data dir belongs to.
	NodeID string `json:"node_id"`
	// RaftID is the Raft server id the dir's Raft state was written
	// under: NodeID for a founding member, NodeID.inc-<hex> otherwise.
	RaftID string `json:"raft_id"`
}

// identityVersion is the format version written in the file.
const identityVersion = 1

type identityFile struct {
	Version int `json:"version"`
	Identity
}

// ErrIdentity is wrapped by the errors of a data dir's identity file:
// unreadable, malformed, or another node's.
var ErrIdentity = errors.New("store: data dir identity")

// NewRaftID returns a Raft server id for a new incarnation of node.
func NewRaftID(node string) (string, error) {
	var b [validate.IncarnationHex / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new raft id: %w", err)
	}
	return node + validate.IncarnationSep + hex.EncodeToString(b[:]), nil
}

// NodeOfRaftID returns the node id a Raft server id belongs to: the id
// without its incarnation, or the id itself for a founding member.
func NodeOfRaftID(raftID string) string {
	node, _ := splitRaftID(raftID)
	return node
}

// HasIncarnation reports whether id ends like a Raft server id of a new
// incarnation ("….inc-<16 hex digits>"). A node id must not (cells
// Config.Validate refuses it): its Raft ids would be ambiguous.
func HasIncarnation(id string) bool {
	_, inc := splitRaftID(id)
	return inc != ""
}

func splitRaftID(id string) (node, inc string) { return validate.SplitRaftID(id) }

func validRaftIDOf(node, raftID string) bool { return validate.RaftIDOf(node, raftID) }

// ValidRaftID reports whether id is a valid Raft server id of some node.
func ValidRaftID(id string) bool { return validRaftIDOf(NodeOfRaftID(id), id) }

// decodeIdentity parses an identity file.
func decodeIdentity(b []byte) (Identity, error) {
	if len(b) > maxIdentityBytes {
		return Identity{}, fmt.Errorf("%w: file larger than %d bytes", ErrIdentity, maxIdentityBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f identityFile
	if err := dec.Decode(&f); err != nil {
		return Identity{}, fmt.Errorf("%w: malformed: %v", ErrIdentity, err)
	}
	if dec.More() {
		return Identity{}, fmt.Errorf("%w: trailing data", ErrIdentity)
	}
	if f.Version != identityVersion {
		return Identity{}, fmt.Errorf("%w: version %d, want %d", ErrIdentity, f.Version, identityVersion)
	}
	if !validRaftIDOf(f.NodeID, f.RaftID) {
		return Identity{}, fmt.Errorf("%w: raft_id is not a Raft id of node_id", ErrIdentity)
	}
	return f.Identity, nil
}

// encodeIdentity is the file content for id.
func encodeIdentity(id Identity) []byte {
	b, _ := json.Marshal(identityFile{Version: identityVersion, Identity: id}) // cannot fail: strings and an int
	return append(b, '\n')
}

// ReadIdentity reads dataDir's identity file; ok is false when there is
// none.
func ReadIdentity(dataDir string) (id Identity, ok bool, err error) {
	f, err := os.Open(filepath.Join(dataDir, IdentityFile))
	if errors.Is(err, os.ErrNotExist) {
		return Identity{}, false, nil
	}
	if err != nil {
		return Identity{}, false, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxIdentityBytes+1))
	if err != nil {
		return Identity{}, false, fmt.Errorf("%w: %v", ErrIdentity, err)
	}
	id, err = decodeIdentity(b)
	if err != nil {
		return Identity{}, false, err
	}
	return id, true, nil
}

// writeIdentity writes dataDir's identity file atomically and durably: a
// synced temporary file renamed over the old one, then the dir synced.
// Open calls it before Raft writes any state under id.RaftID.
func writeIdentity(dataDir string, id Identity) error {
	fail := func(err error) error { return fmt.Errorf("%w: write: %v", ErrIdentity, err) }
	tmp, err := os.CreateTemp(dataDir, "."+IdentityFile+"-*")
	if err != nil {
		return fail(err)
	}
	_, werr := tmp.Write(encodeIdentity(id))
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fail(err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dataDir, IdentityFile)); err != nil {
		_ = os.Remove(tmp.Name())
		return fail(err)
	}
	return syncDir(dataDir)
}

// syncDir fsyncs a directory, making a rename in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: sync dir: %v", ErrIdentity, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w: sync dir: %v", ErrIdentity, err)
	}
	return nil
}
