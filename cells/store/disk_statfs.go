//go:build linux || darwin

package store

import "syscall"

// statfsSpace is the production DiskSpace: statfs(2) of the directory.
type statfsSpace struct{}

func (statfsSpace) Space(dir string) (free, total uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := uint64(st.Bsize) //nolint:gosec // block sizes are positive
	return uint64(st.Bavail) * bs, uint64(st.Blocks) * bs, nil
}
