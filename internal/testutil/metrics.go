package testutil

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// MetricSum sums the samples of metric on the Prometheus text page at url
// whose labels contain every one of labels (e.g. `method="Append"`); 0
// when there is none. hc nil is http.DefaultClient.
func MetricSum(t testing.TB, hc *http.Client, url, metric string, labels ...string) float64 {
	t.Helper()
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("%s: %q: %v", url, line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return sum
}
