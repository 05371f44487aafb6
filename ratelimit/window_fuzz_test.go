package ratelimit_test

import (
	"encoding/hex"
	"testing"

	"github.com/dripgo/drip/internal/clocktest"
)

// FuzzWindow drives a Window through the operations its input spells, as
// TestWindowDifferential does at random, and holds every outcome to the
// brute-force model: admission times, TryAcquire and HasCapacity, errors
// and DeadlineError's Wait, Level, Waiting; and, exactly, at most MaxRate
// in the window ending at every admission. The first byte picks the rate
// from windowRates (the tiny and the huge among them) and a resolution
// (windowResolution of byte/20%8: 6 and 7 are none); the others, read as
// the driver needs them, a tempo, the operations and their arguments.
//
// The seeds were chosen among random inputs for the variety of what they
// do; more are in testdata/fuzz/FuzzWindow.
func FuzzWindow(f *testing.F) {
	for _, s := range []string{
		// 4 per 8 s: waits, a deadline, a cancelled waiter, SetRate
		"78facbdf518e6dbaaf1939dc7379c95ad32fc70bc2917f4e9b257b750b0f9b00130df0c2b42e14cd43c9155d49d0d7e46c45251d060833d1f71afe4397803dc5c2aea3bafb9fbf55f1d30f5c61dbae35a87afcc44779b9e252fe51e8745ffddedd57ec3e4d274f6049a91ed48174",
		// 1e12 per second: waiters cancelled, a pause
		"7d7cd78fe35f4d084bb690e08fc255466c396c64e8bdfec98b06c2d2b04c9c3b6e047a229f98251911f2d76e31d1ff760688370912fc802910f52ad37f7a48bd44f4a76da81a58b1ddcf7c15ec",
		// 1 per ns: invalid and excessive amounts, a deadline
		"7ea311c5ab7a12912959503d7a7abdf745e7b20e1f4b2a8ea38aae17f9c454b6cd3ace732094da29b42a61771e82776db5ccb04af2d931d51ad5b759baa11a2d71b9d7c9ed5af53ad9e3fa8251fba516a10885361347904db13a4a11ae7a2c9a8f70138bfdebb3f223f7b52a",
		// 1e-9 per hour: deadlines, cancellations
		"827a8ba74a81736690c9b62efc5d6dfb2a0f499c98b15c645fc1077c53d97ee2c94fcc851bb7b68da4efffe52643476a4cca26e5e50d6bd71a115e7b92594ea0f2831f608959d50eb66dd8c572f4919d496728a50acdd28cbd7ca8b5237183e8dcbdbd5ceb970223a7a56ea323de54",
		// 2^59 per 2^55 ns, the coarsest: waits, SetRate
		"854ee69a891956ac4203226ae5cde9ceb6bed379d7ac10a7caf149e7d03610ef18709ff453750b2ad9965309b93e72909a2b18d3f9087ac224f441a38e1e8fce2671b568ca354600937af274ddc4ab0f71b542f5c3eff313efba52c86dddfc5e8c8d6e48",
		// 1e-305 per ns, the finest: a waiter cancelled at its deadline, a pause
		"8844ec7f7da5ef44dbe42f3ea5377eb05b8efc1d130cbcb9980e39119fcaf6cd40dc5abc92757dd6ea6baae93b6d1e811b68a19cfd9c5e7c475007274bd7d4c84f521a30efd243a13be2b14bf299f10f7e6a70e3052d65f277f11dfeaab17940a903b620f0964e09",
	} {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		s := windowRates[int(data[0])%len(windowRates)]
		res := windowResolution(int(data[0])/len(windowRates)%8, s)
		clocktest.Run(t, func(t *testing.T, c *clocktest.Clock) {
			d := newWindowDriver(t, c, &windowBytes{data[1:]}, s, res)
			d.label = "FuzzWindow"
			d.checkGoroutines = true
			d.runAll()
		})
	})
}
