package bench

import (
	"bufio"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Memory reads the process's resident set from /proc/self/status: VmRSS
// (now) and VmHWM (the peak since start or since ResetPeakRSS).
type Memory struct {
	RSS  uint64 // bytes
	Peak uint64 // bytes
}

// ReadMemory returns the current and peak RSS of this process. It fails
// where /proc is not available (non-Linux).
func ReadMemory() (Memory, error) {
	rss, err := procStatusField("/proc/self/status", "VmRSS")
	if err != nil {
		return Memory{}, err
	}
	peak, err := procStatusField("/proc/self/status", "VmHWM")
	if err != nil {
		return Memory{}, err
	}
	return Memory{RSS: rss, Peak: peak}, nil
}

// ResetPeakRSS resets VmHWM to the current RSS (Linux ≥ 4.0, writing 5 to
// /proc/self/clear_refs), so that the next ReadMemory's Peak covers one
// phase only. Where that is not allowed, use a PeakSampler.
func ResetPeakRSS() error {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// procStatusField reads a "Name:   123 kB" line of a /proc file, in bytes.
func procStatusField(path, name string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != name {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			break
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return 0, err
		}
		if len(fields) > 1 && strings.EqualFold(fields[1], "kB") {
			n *= 1024
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("bench: no " + name + " in " + path)
}

// PeakSampler samples VmRSS in the background and keeps the largest value:
// the peak of one phase even where VmHWM cannot be reset. A spike shorter
// than the interval can be missed; VmHWM (after ResetPeakRSS) cannot.
type PeakSampler struct {
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	peak uint64
	n    int
}

// StartPeakSampler starts sampling every interval (≤ 0: 50 ms).
func StartPeakSampler(interval time.Duration) *PeakSampler {
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	s := &PeakSampler{stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *PeakSampler) sample() {
	m, err := ReadMemory()
	if err != nil {
		return
	}
	s.mu.Lock()
	s.peak = max(s.peak, m.RSS)
	s.n++
	s.mu.Unlock()
}

// Stop ends sampling and returns the largest RSS seen, in bytes (0 when
// /proc could not be read), and the number of samples.
func (s *PeakSampler) Stop() (peak uint64, samples int) {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.n
}
