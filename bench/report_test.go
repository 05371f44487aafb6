package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportSmoke runs the whole report with tiny sizes: it checks that
// every section runs and prints its rows, not the figures.
func TestReportSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the report")
	}
	var out bytes.Buffer
	svg := filepath.Join(t.TempDir(), "admissions.svg")
	if err := report(&out, config{smoke: true, svg: svg}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"9:   Drip! 12.00", "4:   Drip!  6.00",
		"non-blocking check, parallel", "heap per blocked waiter", "cancel 500 blocked waiters",
		"achieved rate, 100 goroutine(s)", "wake-up lateness", "juju/ratelimit      admitted after", "per task, 8 workers", "throttle.Seq, per item",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report has no %q:\n%s", want, out.String())
		}
	}
	b, err := os.ReadFile(svg)
	if err != nil || !bytes.HasPrefix(b, []byte("<svg")) || !bytes.Contains(b, []byte("x/time/rate")) {
		t.Errorf("plot: %v, %.80q", err, b)
	}
}
