package acklog

import "golang.org/x/sys/unix"

// Now reads CLOCK_MONOTONIC in nanoseconds: one clock for every process
// of the machine (Go's monotonic reading of time.Now is per process).
func Now() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("acklog: clock_gettime(CLOCK_MONOTONIC): " + err.Error()) // cannot fail on Linux
	}
	return ts.Nano()
}
