package atlas

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
)

// Probe is what the RIPE Atlas probe archive says about a probe: where it
// stands and in which network.
type Probe struct {
	ID int64
	// Latitude and Longitude are set when HasCoords is true.
	Latitude, Longitude float64
	HasCoords           bool
	// ASN is the probe's IPv4 AS (its IPv6 AS when it has no IPv4 one); 0
	// when unknown.
	ASN int
	// Country is the ISO 3166 alpha-2 code, "" when unknown or invalid.
	Country string
}

// ProbeSet is a parsed probe archive.
type ProbeSet struct {
	Probes map[int64]Probe
	// Skipped counts the entries that were not probes (no id, wrong types).
	Skipped int
}

// maxProbeArchive bounds the probe archive (today about 50 MB
// uncompressed for some 40,000 probes).
const maxProbeArchive = 1 << 30

type probeJSON struct {
	ID          *int64   `json:"id"`
	Latitude    *float64 `json:"latitude"`
	Longitude   *float64 `json:"longitude"`
	ASNv4       *int64   `json:"asn_v4"`
	ASNv6       *int64   `json:"asn_v6"`
	CountryCode *string  `json:"country_code"`
	Geometry    *struct {
		Coordinates []float64 `json:"coordinates"`
	} `json:"geometry"`
}

// ParseProbes reads a probe archive or API listing: a JSON array of probes,
// or an object whose "objects" (archive) or "results" (API) member is one;
// plain, gzip or bzip2. Each probe gives its id, latitude and longitude (or
// GeoJSON geometry.coordinates, [longitude, latitude]), asn_v4, asn_v6 and
// country_code; other fields are ignored. Entries that are not probes are
// counted and skipped; a document that is not such JSON is an error.
func ParseProbes(r io.Reader) (ProbeSet, error) {
	set := ProbeSet{Probes: map[int64]Probe{}}
	br, err := decompress(r)
	if err != nil {
		return set, err
	}
	dec := json.NewDecoder(io.LimitReader(br, maxProbeArchive))
	tok, err := dec.Token()
	if err != nil {
		return set, fmt.Errorf("atlas: probes: %w", err)
	}
	switch tok {
	case json.Delim('['):
		if err := set.array(dec); err != nil {
			return set, err
		}
	case json.Delim('{'):
		found := false
		for dec.More() {
			key, err := dec.Token()
			if err != nil {
				return set, fmt.Errorf("atlas: probes: %w", err)
			}
			if k, _ := key.(string); (k == "objects" || k == "results") && !found {
				t, err := dec.Token()
				if err != nil {
					return set, fmt.Errorf("atlas: probes: %w", err)
				}
				if t != json.Delim('[') {
					return set, fmt.Errorf("atlas: probes: %q is not a list", k)
				}
				if err := set.array(dec); err != nil {
					return set, err
				}
				found = true
				continue
			}
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return set, fmt.Errorf("atlas: probes: %w", err)
			}
		}
		if !found {
			return set, errors.New(`atlas: probes: no "objects" or "results" list`)
		}
	default:
		return set, errors.New("atlas: probes: want a JSON array or object")
	}
	return set, nil
}

// array reads probes up to the array's closing bracket.
func (set *ProbeSet) array(dec *json.Decoder) error {
	for dec.More() {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("atlas: probes: %w", err)
		}
		var pj probeJSON
		if json.Unmarshal(raw, &pj) != nil || pj.ID == nil || *pj.ID <= 0 {
			set.Skipped++
			continue
		}
		p := Probe{ID: *pj.ID}
		lat, lon := pj.Latitude, pj.Longitude
		if (lat == nil || lon == nil) && pj.Geometry != nil && len(pj.Geometry.Coordinates) == 2 {
			lon, lat = &pj.Geometry.Coordinates[0], &pj.Geometry.Coordinates[1]
		}
		if lat != nil && lon != nil && validCoords(*lat, *lon) {
			p.Latitude, p.Longitude, p.HasCoords = *lat, *lon, true
		}
		for _, a := range []*int64{pj.ASNv4, pj.ASNv6} {
			if a != nil && *a > 0 && *a <= math.MaxUint32 && p.ASN == 0 {
				p.ASN = int(*a)
			}
		}
		if c := pj.CountryCode; c != nil && len(*c) == 2 && upper((*c)[0]) && upper((*c)[1]) {
			p.Country = *c
		}
		set.Probes[p.ID] = p
	}
	if _, err := dec.Token(); err != nil { // ']'
		return fmt.Errorf("atlas: probes: %w", err)
	}
	return nil
}

func validCoords(lat, lon float64) bool {
	return !math.IsNaN(lat) && !math.IsNaN(lon) && lat >= -90 && lat <= 90 && lon >= -180 && lon <= 180
}

func upper(c byte) bool { return c >= 'A' && c <= 'Z' }
