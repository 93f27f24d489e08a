//go:build !linux && !darwin

package store

// statfsSpace has no free-space check on this platform: the watermark is
// off (DiskStatus.Unsupported).
type statfsSpace struct{}

func (statfsSpace) Space(string) (uint64, uint64, error) { return 0, 0, errDiskSpaceUnsupported }
