package validate

import (
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/cellplane/cellplane/internal/labelsel"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// SearchContexts validates a SearchContextsRequest: a query or a vector
// (or both), the filters, and the bounds. A limit above the maximum is
// capped by the server, not rejected.
func SearchContexts(lim Limits, req *contextv1.SearchContextsRequest) error {
	var v violations
	v.size(lim, req)
	v.search(lim, req.GetQuery(), req.GetVector())
	if n := len(req.GetContextIds()); n > lim.MaxPageSize {
		v.add("context_ids", "names %d contexts; the limit is %d", n, lim.MaxPageSize)
	} else {
		for i, id := range req.GetContextIds() {
			v.id(fieldIndex("context_ids", i), id, lim.MaxIDLen)
		}
	}
	v.selector(lim, "context_labels", req.GetContextLabels())
	v.selector(lim, "entry_metadata", req.GetEntryMetadata())
	if n := len(req.GetRoles()); n > lim.Selector.MaxValues {
		v.add("roles", "names %d roles; the limit is %d", n, lim.Selector.MaxValues)
	}
	v.readOptions("read_options", req.GetReadOptions())
	return v.err()
}

// SearchMemory validates a SearchMemoryRequest.
func SearchMemory(lim Limits, req *contextv1.SearchMemoryRequest) error {
	var v violations
	v.size(lim, req)
	v.search(lim, req.GetQuery(), req.GetVector())
	v.memoryScope(req.GetScope())
	if len(req.GetPrefix()) > lim.MaxMemoryKeyBytes {
		v.add("prefix", "is %d bytes; the limit is %d bytes", len(req.GetPrefix()), lim.MaxMemoryKeyBytes)
	}
	v.selector(lim, "labels", req.GetLabels())
	v.readOptions("read_options", req.GetReadOptions())
	return v.err()
}

// WatchChanges validates a WatchChangesRequest.
func WatchChanges(lim Limits, req *contextv1.WatchChangesRequest) error {
	var v violations
	if n := len(req.GetContextIds()); n > lim.MaxPageSize {
		v.add("context_ids", "names %d contexts; the limit is %d", n, lim.MaxPageSize)
	} else {
		for i, id := range req.GetContextIds() {
			v.id(fieldIndex("context_ids", i), id, lim.MaxIDLen)
		}
	}
	return v.err()
}

func (v *violations) search(lim Limits, query string, vector []float32) {
	switch {
	case query == "" && len(vector) == 0:
		v.add("query", "a query or a vector is required")
	case len(query) > lim.MaxQueryBytes:
		v.add("query", "is %d bytes; the limit is %d bytes", len(query), lim.MaxQueryBytes)
	case !utf8.ValidString(query):
		v.add("query", "must be UTF-8")
	}
	v.vector(lim, "vector", vector)
}

// vector checks an embedding: at most MaxVectorDims finite numbers, not
// all zero (a zero vector has no direction to compare).
func (v *violations) vector(lim Limits, field string, vec []float32) {
	if len(vec) == 0 {
		return
	}
	if len(vec) > lim.MaxVectorDims {
		v.add(field, "has %d dimensions; the limit is %d", len(vec), lim.MaxVectorDims)
		return
	}
	var nonzero bool
	for _, x := range vec {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			v.add(field, "must hold finite numbers")
			return
		}
		nonzero = nonzero || x != 0
	}
	if !nonzero {
		v.add(field, "must not be all zeros")
	}
}

// selector checks a label selector's sizes and meaning.
func (v *violations) selector(lim Limits, field string, sel *contextv1.LabelSelector) {
	reqs := sel.GetRequirements()
	if len(reqs) > lim.Selector.MaxRequirements {
		v.add(field+".requirements", "has %d requirements; the limit is %d", len(reqs), lim.Selector.MaxRequirements)
		return
	}
	maxKey := max(lim.Labels.MaxKeyBytes, lim.EntryMetadata.MaxKeyBytes)
	maxValue := max(lim.Labels.MaxValueBytes, lim.EntryMetadata.MaxValueBytes)
	for i, r := range reqs {
		f := fieldIndex(field+".requirements", i)
		if len(r.GetKey()) > maxKey {
			v.add(f+".key", "is %d bytes; the limit is %d bytes", len(r.GetKey()), maxKey)
		}
		if len(r.GetValues()) > lim.Selector.MaxValues {
			v.add(f+".values", "has %d values; the limit is %d", len(r.GetValues()), lim.Selector.MaxValues)
		}
		for _, val := range r.GetValues() {
			if len(val) > maxValue {
				v.add(f+".values", "has a value of %d bytes; the limit is %d bytes", len(val), maxValue)
				break
			}
		}
	}
	if _, err := labelsel.Compile(sel); err != nil {
		v.add(field, "%s", err.Error())
	}
}

func fieldIndex(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }
