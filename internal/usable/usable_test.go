package usable

import (
	"strings"
	"testing"
	"time"
)

type fake struct{ q float64 }

func (f *fake) MaxRate() float64      { return f.q }
func (f *fake) Period() time.Duration { return time.Second }

type unrated struct{}

type broken struct{}

func (broken) MaxRate() float64      { panic("no rate") }
func (broken) Period() time.Duration { return 0 }

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		name  string
		l     any
		rates bool
		want  string // in the panic; "" for none
	}{
		{"nil", nil, false, "x: nil limiter"},
		{"nil pointer", (*fake)(nil), false, "x: nil *usable.fake"},
		{"nil func", (func())(nil), false, "x: nil func()"},
		{"unrated", unrated{}, true, ""},
		{"rated", &fake{1}, true, ""},
		{"zero rate, unchecked", &fake{0}, false, ""},
		{"zero rate", &fake{0}, true, "x: *usable.fake has MaxRate 0 and Period 1s; both must be > 0"},
		{"NaN rate", &fake{nan()}, true, "has MaxRate NaN"},
		{"rate panics", broken{}, false, "x: usable.broken's MaxRate or Period panics (not made by its constructor?): no rate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := func() (msg string) {
				defer func() {
					if r := recover(); r != nil {
						msg = r.(string)
					}
				}()
				Check("x", tt.l, tt.rates)
				return ""
			}()
			if (tt.want == "") != (got == "") || !strings.Contains(got, tt.want) {
				t.Errorf("Check(%v) panicked with %q, want %q", tt.l, got, tt.want)
			}
		})
	}
}

func nan() float64 { z := 0.0; return z / z }
