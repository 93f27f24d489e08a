//go:build !linux

package acklog

import "time"

var start = time.Now()

// Now is a per-process monotonic reading off Linux: records of several
// processes cannot be compared there (the fault suite runs on Linux only).
func Now() int64 { return int64(time.Since(start)) }
