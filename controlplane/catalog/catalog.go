package catalog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// ErrCorrupt is returned (wrapped) when a stored value does not decode.
var ErrCorrupt = errors.New("catalog: corrupt record")

// Record is a decoded record with the metadata of the key it was read
// from.
type Record[T proto.Message] struct {
	Value T
	// Key is the record's key, relative to the store's prefix; Parsed is
	// that key split into its kind and ids.
	Key    string
	Parsed topo.ParsedKey
	// Version is the revision of the record's last write (the condition
	// for writing it back), Created the one that created it.
	Version topo.Version
	Created topo.Version
	// Lease is the lease the record is bound to (0: none).
	Lease topo.LeaseID
}

func recordOf[T proto.Message](kv topo.KV, v T) Record[T] {
	return Record[T]{Value: v, Key: kv.Key, Parsed: topo.ParseKey(kv.Key), Version: kv.Version, Created: kv.Created, Lease: kv.Lease}
}

// Get reads key into msg and returns its version (topo.ErrNotFound when
// absent).
func Get(ctx context.Context, st topo.Store, key string, msg proto.Message) (topo.Version, error) {
	kv, err := st.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := Decode(kv, msg); err != nil {
		return 0, err
	}
	return kv.Version, nil
}

// GetRecord reads the record at key (topo.ErrNotFound when absent). When
// the value does not decode (ErrCorrupt) the record's metadata is still
// filled in, so that the caller can overwrite or delete it conditionally.
func GetRecord[T proto.Message](ctx context.Context, st topo.Store, key string, newT func() T) (Record[T], error) {
	kv, err := st.Get(ctx, key)
	if err != nil {
		return Record[T]{}, err
	}
	rec := recordOf(kv, newT())
	return rec, Decode(kv, rec.Value)
}

// Decode unmarshals a KV's value into msg.
func Decode(kv topo.KV, msg proto.Message) error {
	if err := proto.Unmarshal(kv.Value, msg); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrCorrupt, kv.Key, err)
	}
	return nil
}

// Encode marshals msg deterministically (so equal records are equal bytes).
func Encode(msg proto.Message) []byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		// Only an invalid message (e.g. bad UTF-8 in a string) fails; our
		// records are validated before they are built.
		panic(fmt.Sprintf("catalog: marshal %T: %v", msg, err))
	}
	return b
}

// Each calls fn for every key under prefix, page by page, all pages read
// at one revision (a consistent snapshot). It returns that revision: watch
// from it + 1 to follow later changes.
func Each(ctx context.Context, st topo.Store, prefix string, pageSize int, fn func(topo.KV) error) (topo.Revision, error) {
	opts := topo.ListOptions{Limit: pageSize}
	for {
		page, err := st.List(ctx, prefix, opts)
		if err != nil {
			return 0, err
		}
		for _, kv := range page.KVs {
			if err := fn(kv); err != nil {
				return 0, err
			}
		}
		opts.Revision = page.Revision
		if !page.More || len(page.KVs) == 0 {
			return page.Revision, nil
		}
		opts.After = page.KVs[len(page.KVs)-1].Key
	}
}

// ListRecords decodes every record of kind under prefix (keys of other
// kinds that share the prefix are skipped), at one revision, in key order.
// A record that does not decode fails the listing (ErrCorrupt). The
// revision is the one read: watch from it + 1 to follow later changes.
func ListRecords[T proto.Message](ctx context.Context, st topo.Store, prefix string, kind topo.KeyKind, newT func() T) ([]Record[T], topo.Revision, error) {
	return listRecords(ctx, st, prefix, kind, newT, false)
}

// ListDecodable is ListRecords for readers that must not stop on one bad
// record: records that do not decode are left out.
func ListDecodable[T proto.Message](ctx context.Context, st topo.Store, prefix string, kind topo.KeyKind, newT func() T) ([]Record[T], topo.Revision, error) {
	return listRecords(ctx, st, prefix, kind, newT, true)
}

// List decodes every record of kind under prefix, at one revision.
//
//	moves, rev, err := catalog.List(ctx, st, topo.MovesPrefix, topo.KindMove, func() *cpv1.Move { return new(cpv1.Move) })
func List[T proto.Message](ctx context.Context, st topo.Store, prefix string, kind topo.KeyKind, newT func() T) ([]T, topo.Revision, error) {
	recs, rev, err := ListRecords(ctx, st, prefix, kind, newT)
	if err != nil {
		return nil, 0, err
	}
	return Values(recs), rev, nil
}

// Values drops the metadata of records.
func Values[T proto.Message](recs []Record[T]) []T {
	out := make([]T, len(recs))
	for i, r := range recs {
		out[i] = r.Value
	}
	return out
}

func listRecords[T proto.Message](ctx context.Context, st topo.Store, prefix string, kind topo.KeyKind, newT func() T, skipCorrupt bool) ([]Record[T], topo.Revision, error) {
	var out []Record[T]
	rev, err := Each(ctx, st, prefix, 0, func(kv topo.KV) error {
		rec := recordOf(kv, newT())
		if rec.Parsed.Kind != kind {
			return nil
		}
		if err := Decode(kv, rec.Value); err != nil {
			if skipCorrupt {
				return nil
			}
			return err
		}
		out = append(out, rec)
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return out, rev, nil
}

// Entry is a record of any kind as a listing or a watch shows it.
type Entry struct {
	// Type is EventPut for a listed record.
	Type topo.EventType
	// Key is the record's key split into its kind and ids.
	Key topo.ParsedKey
	KV  topo.KV
	// Value is the decoded record, of the message type that lives at Key's
	// kind (NewRecord); nil for a delete, a key of no known kind, or a
	// value that does not decode (DecodeEvent's error says so).
	Value proto.Message
}

// DecodeEvent decodes a watch event of any record kind: it parses the key
// and, for a put, decodes the value into the message its kind holds. On
// ErrCorrupt the entry still has its Type, Key and KV.
func DecodeEvent(ev topo.Event) (Entry, error) {
	e := Entry{Type: ev.Type, Key: topo.ParseKey(ev.KV.Key), KV: ev.KV}
	if ev.Type != topo.EventPut {
		return e, nil
	}
	msg := NewRecord(e.Key.Kind)
	if msg == nil {
		return e, nil
	}
	if err := Decode(ev.KV, msg); err != nil {
		return e, err
	}
	e.Value = msg
	return e, nil
}

// DecodeKV decodes a listed KV of any record kind (DecodeEvent of a put).
func DecodeKV(kv topo.KV) (Entry, error) {
	return DecodeEvent(topo.Event{Type: topo.EventPut, KV: kv})
}

// DecodePut decodes a watch event that puts a record of kind; ok is false
// (and nothing is decoded) for a delete or a key of another kind.
func DecodePut[T proto.Message](ev topo.Event, kind topo.KeyKind, newT func() T) (rec Record[T], ok bool, err error) {
	if ev.Type != topo.EventPut {
		return rec, false, nil
	}
	rec = recordOf(ev.KV, newT())
	if rec.Parsed.Kind != kind {
		return Record[T]{}, false, nil
	}
	return rec, true, Decode(ev.KV, rec.Value)
}

// StoreError turns a topo error into the error contract: an unreachable
// store is CONTROLPLANE_UNAVAILABLE with a retry hint; context errors pass
// through; *cperr.Error passes through; anything else is INTERNAL (logged
// by the caller, never shown).
func StoreError(err error) error {
	var ce *cperr.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, topo.ErrUnavailable), errors.Is(err, topo.ErrClosed):
		e := cperr.New(cperr.ControlPlaneUnavailable, "the control plane's store (etcd) is unreachable; try again")
		e.RetryAfter = time.Second
		return e
	}
	return fmt.Errorf("%w: %w", cperr.ErrInternal, err)
}

// NewRecord returns an empty message of the type that lives at keys of
// kind (nil for KindUnknown): with topo/keys.go, the one table of which
// record is stored where.
func NewRecord(kind topo.KeyKind) proto.Message {
	switch kind {
	case topo.KindRegion:
		return &cpv1.Region{}
	case topo.KindCell:
		return &cpv1.Cell{}
	case topo.KindCellLoad:
		return &cpv1.CellLoad{}
	case topo.KindCellBootstrap:
		return &cpv1.CellBootstrap{}
	case topo.KindCellLeader:
		return &cpv1.CellLeader{}
	case topo.KindCellNode:
		return &cpv1.Node{}
	case topo.KindCellAuthority:
		return &cpv1.CellAuthority{}
	case topo.KindCellFence:
		return &cpv1.CellFence{}
	case topo.KindTenant:
		return &cpv1.Tenant{}
	case topo.KindAPIKey:
		return &cpv1.ApiKey{}
	case topo.KindWorkflow:
		return &cpv1.Workflow{}
	case topo.KindMove:
		return &cpv1.Move{}
	case topo.KindFailover:
		return &cpv1.Failover{}
	case topo.KindFailoverPolicy:
		return &cpv1.FailoverPolicy{}
	case topo.KindDrain:
		return &cpv1.DrainCellRequest{}
	case topo.KindTokenPublicKey:
		return &cpv1.TokenPublicKey{}
	case topo.KindTokenPrivateKey:
		return &cpv1.TokenPrivateKey{}
	case topo.KindRevokedToken:
		return &cpv1.RevokedToken{}
	}
	return nil
}
