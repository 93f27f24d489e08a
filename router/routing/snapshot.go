package routing

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cellplane/cellplane/internal/auth"
)

// Snapshot file format (all integers little-endian):
//
//	magic    8 bytes  "CPROUTE\n"
//	version  uint32   snapshotVersion
//	length   uint64   payload length
//	payload  length bytes
//	crc      uint32   CRC-32C (Castagnoli) of everything before it
//
// The payload is a sequence of uvarints and strings (uvarint length +
// bytes):
//
//	revision, written (unix nanos: when the table was last known to match
//	          etcd, which a restarted router takes as its keys' freshness)
//	cell ids:   n, n × string               (index 0 is "")
//	limits:     n, n × (float64 bits as uint64 uvarint, burst; from
//	                    version 4 also the bytes rate as float64 bits and
//	                    the bytes burst: older files have none)
//	tenants:    n, n × (id, cell index, limits index, epoch, version, state,
//	                    flags)
//	            flags is one byte (bit 0: cutting_over); version 1 files
//	            have no flags byte and are still read
//	api keys:   n, n × (key id, tenant, hash, revoked 0/1; from version
//	                    5 also the principal and the scope bits: older
//	                    files have none, read as "" and the default scopes)
//	cells:      n, n × (id, region, leader id, leader grpc, leader http,
//	                    nodes n, n × (id, grpc, http, worker 0/1))
//	revoked:    n, n × (tenant, entry id, revoked at, expires at: unix
//	                    nanos as zig-zag varints); version 3 only (older
//	                    files have no revocation list and are still read)
const (
	snapshotMagic   = "CPROUTE\n"
	snapshotVersion = 5
	// snapshotVersionGrant is the first version whose API keys carry a
	// principal and scopes.
	snapshotVersionGrant = 5
	// snapshotVersionBytes is the first version whose limits carry the
	// tenant's byte rate and burst (H4).
	snapshotVersionBytes = 4
	// snapshotVersionRevoked is the first version with the JWT revocation
	// list; version 2 files (without it) are still read.
	snapshotVersionRevoked = 3
	headerLen              = 8 + 4 + 8
	// snapshotVersionNoFlags is the oldest readable version: tenants
	// without the flags byte.
	snapshotVersionNoFlags = 1
)

var (
	errNoSnapshot  = errors.New("routing: no snapshot")
	errBadSnapshot = errors.New("routing: bad snapshot")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeSnapshot serializes v. Watch events may apply while it runs: the
// snapshot then holds some entries newer than its revision, which is
// harmless (a snapshot only serves until the next full load).
func encodeSnapshot(v *view, written time.Time) []byte {
	return encodeSnapshotFormat(v, written, snapshotVersion)
}

// encodeSnapshotFormat writes format snapshotVersion, or
// snapshotVersionNoFlags (tests of the old format's reader).
func encodeSnapshotFormat(v *view, written time.Time, format uint32) []byte {
	rev := v.rev.Load()
	cellIdx := map[string]uint64{"": 0}
	cellIDs := []string{""}
	limIdx := map[Limits]uint64{{}: 0}
	lims := []Limits{{}}
	var tenants []byte
	var nt uint64
	for i := range v.shards {
		sh := &v.shards[i]
		sh.mu.RLock()
		for id, e := range sh.m {
			c := v.cellIDs.get(uint32(e.cell))
			ci, ok := cellIdx[c]
			if !ok {
				ci = uint64(len(cellIDs))
				cellIdx[c] = ci
				cellIDs = append(cellIDs, c)
			}
			l := v.limits.get(e.limits)
			li, ok := limIdx[l]
			if !ok {
				li = uint64(len(lims))
				limIdx[l] = li
				lims = append(lims, l)
			}
			tenants = appendString(tenants, id)
			tenants = binary.AppendUvarint(tenants, ci)
			tenants = binary.AppendUvarint(tenants, li)
			tenants = binary.AppendUvarint(tenants, e.epoch)
			tenants = binary.AppendUvarint(tenants, uint64(e.ver))
			tenants = append(tenants, e.state)
			if format > snapshotVersionNoFlags {
				tenants = append(tenants, e.flags)
			}
			nt++
		}
		sh.mu.RUnlock()
	}

	b := make([]byte, headerLen, headerLen+len(tenants)+1024)
	b = binary.AppendUvarint(b, uint64(rev))
	b = binary.AppendUvarint(b, uint64(written.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(cellIDs)))
	for _, c := range cellIDs {
		b = appendString(b, c)
	}
	b = binary.AppendUvarint(b, uint64(len(lims)))
	for _, l := range lims {
		b = binary.AppendUvarint(b, math.Float64bits(l.Rate))
		b = binary.AppendUvarint(b, uint64(l.Burst))
		if format >= snapshotVersionBytes {
			b = binary.AppendUvarint(b, math.Float64bits(l.BytesRate))
			b = binary.AppendUvarint(b, uint64(l.BytesBurst))
		}
	}
	b = binary.AppendUvarint(b, nt)
	b = append(b, tenants...)

	v.keysMu.RLock()
	ids := make([]string, 0, len(v.keys))
	for id := range v.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		k := v.keys[id]
		b = appendString(b, id)
		b = appendString(b, k.tenant)
		b = appendString(b, string(k.hash))
		b = appendBool(b, k.revoked)
		if format >= snapshotVersionGrant {
			b = appendString(b, k.principal)
			b = binary.AppendUvarint(b, uint64(k.scopes))
		}
	}
	v.keysMu.RUnlock()

	cells := v.cellMap()
	cids := make([]string, 0, len(cells))
	for id := range cells {
		cids = append(cids, id)
	}
	slices.Sort(cids)
	b = binary.AppendUvarint(b, uint64(len(cids)))
	for _, id := range cids {
		c := cells[id]
		for _, s := range []string{c.ID, c.Region, c.LeaderID, c.LeaderGRPC, c.LeaderHTTP} {
			b = appendString(b, s)
		}
		nodes := append(slices.Clone(c.Members), c.Workers...)
		b = binary.AppendUvarint(b, uint64(len(nodes)))
		for _, n := range nodes {
			b = appendString(b, n.ID)
			b = appendString(b, n.GRPCAddr)
			b = appendString(b, n.HTTPAddr)
			b = appendBool(b, n.Worker)
		}
	}

	if format >= snapshotVersionRevoked {
		v.keysMu.RLock()
		var n uint64
		var rb []byte
		for _, tenant := range slices.Sorted(maps.Keys(v.revoked)) {
			m := v.revoked[tenant]
			for _, id := range slices.Sorted(maps.Keys(m)) {
				e := m[id]
				rb = appendString(rb, tenant)
				rb = appendString(rb, id)
				rb = binary.AppendVarint(rb, e.RevokedAt.UnixNano())
				rb = binary.AppendVarint(rb, e.ExpiresAt.UnixNano())
				n++
			}
		}
		v.keysMu.RUnlock()
		b = binary.AppendUvarint(b, n)
		b = append(b, rb...)
	}

	copy(b, snapshotMagic)
	binary.LittleEndian.PutUint32(b[8:], format)
	binary.LittleEndian.PutUint64(b[12:], uint64(len(b)-headerLen))
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// decoder reads the payload; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errBadSnapshot}, args...)...)
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items of at least minSize bytes each.
func (d *decoder) count(minSize int) int {
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b)/minSize) {
		d.fail("count %d exceeds the remaining %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail("string of %d bytes, %d left", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail("bad bool")
		return false
	}
}

// decodeSnapshot parses a snapshot into a new view.
func decodeSnapshot(b []byte) (*view, time.Time, error) {
	if len(b) < headerLen+4 {
		return nil, time.Time{}, fmt.Errorf("%w: %d bytes is too short", errBadSnapshot, len(b))
	}
	if string(b[:8]) != snapshotMagic {
		return nil, time.Time{}, fmt.Errorf("%w: bad magic", errBadSnapshot)
	}
	format := binary.LittleEndian.Uint32(b[8:])
	if format < snapshotVersionNoFlags || format > snapshotVersion {
		return nil, time.Time{}, fmt.Errorf("%w: format version %d, want %d to %d", errBadSnapshot, format, snapshotVersionNoFlags, snapshotVersion)
	}
	if n := binary.LittleEndian.Uint64(b[12:]); n != uint64(len(b)-headerLen-4) {
		return nil, time.Time{}, fmt.Errorf("%w: payload length %d, file holds %d", errBadSnapshot, n, len(b)-headerLen-4)
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return nil, time.Time{}, fmt.Errorf("%w: checksum %08x, want %08x", errBadSnapshot, got, sum)
	}
	d := &decoder{b: body[headerLen:]}
	v := newView()
	rev := d.uvarint()
	written := time.Unix(0, int64(d.uvarint()))
	if rev > math.MaxInt64 {
		d.fail("revision %d", rev)
	}

	cellIdx := make([]uint16, d.count(1))
	for i := range cellIdx {
		s := d.string()
		if d.err != nil {
			break
		}
		idx, err := v.cellIDs.intern(s)
		if err != nil {
			d.fail("cell %q: %v", s, err)
			break
		}
		cellIdx[i] = uint16(idx)
	}
	limIdx := make([]uint32, d.count(2))
	for i := range limIdx {
		l := Limits{Rate: math.Float64frombits(d.uvarint())}
		burst := d.uvarint()
		var bytesBurst uint64
		if format >= snapshotVersionBytes {
			l.BytesRate = math.Float64frombits(d.uvarint())
			bytesBurst = d.uvarint()
		}
		if d.err != nil {
			break
		}
		if burst > math.MaxUint32 || bytesBurst > math.MaxUint32 {
			d.fail("burst %d, bytes burst %d", burst, bytesBurst)
			break
		}
		l.Burst, l.BytesBurst = uint32(burst), uint32(bytesBurst)
		idx, err := v.limits.intern(l)
		if err != nil {
			d.fail("limits: %v", err)
			break
		}
		limIdx[i] = idx
	}
	withFlags := format > snapshotVersionNoFlags
	minTenant := 6
	if withFlags {
		minTenant = 7
	}
	nt := d.count(minTenant)
	for range nt {
		id := d.string()
		ci, li := d.uvarint(), d.uvarint()
		e := entry{epoch: d.uvarint()}
		ver := d.uvarint()
		e.state = d.byte()
		if withFlags {
			e.flags = d.byte()
		}
		if d.err != nil {
			break
		}
		if id == "" || ci >= uint64(len(cellIdx)) || li >= uint64(len(limIdx)) || ver > math.MaxInt64 || e.flags&^knownFlags != 0 {
			d.fail("bad tenant %q", id)
			break
		}
		e.cell, e.limits, e.ver = cellIdx[ci], limIdx[li], int64(ver)
		if !v.put(id, e, nil) {
			d.fail("duplicate tenant %q", id)
			break
		}
	}
	nk := d.count(4)
	for range nk {
		id, tenant, hash, revoked := d.string(), d.string(), d.string(), d.bool()
		k := apiKey{tenant: tenant, hash: []byte(hash), revoked: revoked, scopes: auth.DefaultScopes}
		if format >= snapshotVersionGrant {
			k.principal = d.string()
			bits := d.uvarint()
			if bits > uint64(auth.FullScopes) {
				d.fail("bad scopes of key %q", id)
			}
			k.scopes = auth.Scopes(bits)
		}
		if d.err != nil {
			break
		}
		v.keys[id] = k
	}
	nc := d.count(6)
	cells := make(map[string]*CellRoute, nc)
	for range nc {
		c := &CellRoute{ID: d.string(), Region: d.string(), LeaderID: d.string(), LeaderGRPC: d.string(), LeaderHTTP: d.string()}
		nn := d.count(4)
		for range nn {
			n := Node{ID: d.string(), GRPCAddr: d.string(), HTTPAddr: d.string(), Worker: d.bool()}
			if d.err != nil {
				break
			}
			if n.Worker {
				c.Workers = append(c.Workers, n)
			} else {
				c.Members = append(c.Members, n)
			}
		}
		if d.err != nil {
			break
		}
		cells[c.ID] = c
	}
	if format >= snapshotVersionRevoked {
		nr := d.count(4)
		for range nr {
			tenant, id := d.string(), d.string()
			at, exp := d.varint(), d.varint()
			if d.err != nil {
				break
			}
			if tenant == "" || id == "" {
				d.fail("bad revoked token %q/%q", tenant, id)
				break
			}
			v.setRevoked(tenant, id, auth.RevocationEntry{RevokedAt: time.Unix(0, at), ExpiresAt: time.Unix(0, exp)})
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, time.Time{}, d.err
	}
	v.setCells(cells)
	v.rev.Store(int64(rev))
	v.tenantsRev.Store(int64(rev))
	return v, written, nil
}

func readSnapshotFile(path string) (*view, time.Time, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, errNoSnapshot
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	return decodeSnapshot(b)
}

// writeFileAtomic writes b to path through a temporary file in the same
// directory: write, fsync, rename, fsync the directory.
func writeFileAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// writeSnapshotIfChanged writes the snapshot if a path is set, something
// is loaded and the table changed since the last write.
func (t *Table) writeSnapshotIfChanged() error { return t.writeSnapshotIf(-1) }

// writeSnapshotIf writes the snapshot if a path is set, something is
// loaded, and the table changed since the last write or, with
// freshAdvance ≥ 0, its key freshness advanced by more than freshAdvance
// (so that a router restarted while etcd is down does not find its keys
// stale only because its table had not changed for a while).
func (t *Table) writeSnapshotIf(freshAdvance time.Duration) error {
	if t.cfg.SnapshotPath == "" || !t.loaded.Load() {
		return nil
	}
	t.snapMu.Lock()
	defer t.snapMu.Unlock()
	changes := t.changes.Load()
	fresh := t.keysFresh.Load()
	advanced := freshAdvance >= 0 && fresh != neverFresh &&
		(t.snapFresh == neverFresh || fresh-t.snapFresh > int64(freshAdvance))
	if changes == t.snapChanges && !advanced {
		return nil
	}
	// The time written is when the table was last known to match etcd,
	// not now: a router restarted from this file must not count a table
	// that was already stale when written as fresh (APIKeyMaxStaleness).
	written, ok := t.freshAt()
	if !ok {
		written = time.Now()
	}
	b := encodeSnapshot(t.view.Load(), written)
	if err := writeFileAtomic(t.cfg.SnapshotPath, b); err != nil {
		return fmt.Errorf("routing: write snapshot %s: %w", t.cfg.SnapshotPath, err)
	}
	t.snapChanges, t.snapFresh = changes, fresh
	t.snapshotWrites.Inc()
	t.nSnapshots.Add(1)
	return nil
}

func (t *Table) snapshotLoop(ctx context.Context) {
	tick := time.NewTicker(t.cfg.SnapshotInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			// Rewritten for freshness alone every quarter of the bound
			// at most: a crash loses at most that much of it.
			advance := time.Duration(-1)
			if t.cfg.APIKeyMaxStaleness > 0 {
				advance = t.cfg.APIKeyMaxStaleness / 4
			}
			if err := t.writeSnapshotIf(advance); err != nil {
				t.log.Warn("routing: snapshot write failed", "err", err)
			}
		}
	}
}
