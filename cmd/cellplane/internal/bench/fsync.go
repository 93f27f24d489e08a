package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// FsyncLoop measures the disk's durable-write floor: one worker appends
// size bytes to a fresh file in dir and fsyncs, over and over, like a
// write-ahead log with no batching. Every consensus system on the same
// filesystem pays at least this per commit, so the other steps are read
// as multiples of it. The file is removed afterwards.
func FsyncLoop(ctx context.Context, dir string, size int, l Load) (Result, error) {
	f, err := os.CreateTemp(dir, "fsync-loop-*.dat")
	if err != nil {
		return Result{}, fmt.Errorf("bench: fsync loop: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	// Make the file's directory entry durable first, so the loop measures
	// data syncs, not the creation.
	if err := f.Sync(); err != nil {
		return Result{}, fmt.Errorf("bench: fsync loop: %w", err)
	}
	if d, err := os.Open(filepath.Dir(f.Name())); err == nil {
		_ = d.Sync()
		d.Close()
	}

	buf := payload(size)
	if l.Name == "" {
		l.Name = "fsync"
	}
	l.Concurrency = 1
	l.Rate = 0
	return Run(ctx, l, func(context.Context, int) error {
		if _, err := f.Write(buf); err != nil {
			return err
		}
		return f.Sync()
	})
}
