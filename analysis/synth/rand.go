package synth

// Randomness is a hash of the seed and of what is being drawn (which vantage
// point, target, round…), not a stream: any draw can be made in any order,
// alone, and gives the same value, so Truth agrees with Observations without
// replaying them and the world does not change when one part of it does.

// Purposes of draws, so that two draws about the same things differ.
const (
	drawSiteFirst uint64 = iota + 1
	drawSitePick
	drawServers
	drawRegion
	drawVPPlace
	drawVPBearing
	drawVPDistance
	drawAccess
	drawOffset
	drawASN
	drawTargetSites
	drawTargetStyle
	drawCatchment
	drawAlternative
	drawInflation
	drawServer
	drawNoise
)

// mix is the splitmix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// golden is 2⁶⁴/φ, splitmix64's increment; k2…k4 are other odd constants
// (from murmur3 and xxhash), so that swapping two keys changes the hash.
const (
	golden = 0x9e3779b97f4a7c15
	k2     = 0xc2b2ae3d27d4eb4f
	k3     = 0x165667b19e3779f9
	k4     = 0x27d4eb2f165667c5
)

// hash combines the seed with a purpose and four keys (unused keys are 0).
func hash(seed int64, purpose, a, b, c, d uint64) uint64 {
	h := mix(uint64(seed) + golden*purpose)
	h = mix(h ^ (a + golden))
	h = mix(h ^ (b + k2))
	h = mix(h ^ (c + k3))
	return mix(h ^ (d + k4))
}

// unit maps a hash to [0, 1).
func unit(h uint64) float64 { return float64(h>>11) / (1 << 53) }

// intn maps a hash to [0, n).
func intn(h uint64, n int) int { return int(h % uint64(n)) }
