package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// ErrTopology is wrapped by every error about a TopoJSON document's content.
var ErrTopology = errors.New("bad TopoJSON")

// A TopoJSON topology (https://github.com/topojson/topojson-specification)
// stores each line shared by two shapes once, as an arc: a list of positions.
// When the topology is quantised (it has a transform), positions are
// integers and each arc's positions after the first are deltas from the
// previous one; x = (Σdx)·scale[0] + translate[0], likewise y. Geometries
// refer to arcs by index; a negative index ~i (= -i-1) means arc i reversed.
// Polygons are lists of rings (the first the exterior, the others holes),
// each ring a list of arc indices whose arcs join end to start.

// Point is a longitude and a latitude in degrees.
type Point struct{ Lon, Lat float64 }

// Topology is a decoded TopoJSON document: absolute arcs and the named
// objects.
type Topology struct {
	Arcs    [][]Point
	Objects map[string]Geometry
}

// Geometry is a TopoJSON geometry object. Arcs holds the raw arc indices,
// whose nesting depends on Type; Geometries the members of a
// GeometryCollection.
type Geometry struct {
	Type       string          `json:"type"`
	Arcs       json.RawMessage `json:"arcs"`
	Geometries []Geometry      `json:"geometries"`
}

type rawTopology struct {
	Type      string `json:"type"`
	Transform *struct {
		Scale     [2]float64 `json:"scale"`
		Translate [2]float64 `json:"translate"`
	} `json:"transform"`
	Arcs    [][][]float64       `json:"arcs"`
	Objects map[string]Geometry `json:"objects"`
}

// Decode reads a TopoJSON topology and decodes its arcs to absolute
// longitudes and latitudes.
func Decode(r io.Reader) (*Topology, error) {
	var raw rawTopology
	if err := json.NewDecoder(r).Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTopology, err)
	}
	if raw.Type != "Topology" {
		return nil, fmt.Errorf("%w: type %q, want Topology", ErrTopology, raw.Type)
	}
	t := &Topology{Objects: raw.Objects, Arcs: make([][]Point, len(raw.Arcs))}
	for i, arc := range raw.Arcs {
		if len(arc) < 2 {
			return nil, fmt.Errorf("%w: arc %d has %d positions, want at least 2", ErrTopology, i, len(arc))
		}
		pts := make([]Point, len(arc))
		var x, y float64
		for k, pos := range arc {
			if len(pos) < 2 {
				return nil, fmt.Errorf("%w: arc %d position %d has %d coordinates", ErrTopology, i, k, len(pos))
			}
			if raw.Transform == nil {
				pts[k] = Point{pos[0], pos[1]}
				continue
			}
			x += pos[0]
			y += pos[1]
			pts[k] = Point{
				x*raw.Transform.Scale[0] + raw.Transform.Translate[0],
				y*raw.Transform.Scale[1] + raw.Transform.Translate[1],
			}
		}
		t.Arcs[i] = pts
	}
	return t, nil
}

// arc returns arc i, reversed when i is negative (~i).
func (t *Topology) arc(i int) ([]Point, error) {
	j := i
	if i < 0 {
		j = ^i
	}
	if j >= len(t.Arcs) {
		return nil, fmt.Errorf("%w: arc index %d out of range (%d arcs)", ErrTopology, i, len(t.Arcs))
	}
	a := t.Arcs[j]
	if i >= 0 {
		return a, nil
	}
	r := make([]Point, len(a))
	for k, p := range a {
		r[len(a)-1-k] = p
	}
	return r, nil
}

// Line joins the arcs of a ring or line string: each next arc starts where
// the previous ends, so its first position is dropped.
func (t *Topology) Line(arcs []int) ([]Point, error) {
	var out []Point
	for k, i := range arcs {
		a, err := t.arc(i)
		if err != nil {
			return nil, err
		}
		if k > 0 {
			a = a[1:]
		}
		out = append(out, a...)
	}
	return out, nil
}

// Polygons returns the polygons of a Polygon, MultiPolygon or
// GeometryCollection (of those) geometry, each a list of rings as arc
// indices. Other geometry types are ignored.
func Polygons(g Geometry) ([][][]int, error) {
	switch g.Type {
	case "Polygon":
		var p [][]int
		if err := json.Unmarshal(g.Arcs, &p); err != nil {
			return nil, fmt.Errorf("%w: Polygon arcs: %w", ErrTopology, err)
		}
		return [][][]int{p}, nil
	case "MultiPolygon":
		var mp [][][]int
		if err := json.Unmarshal(g.Arcs, &mp); err != nil {
			return nil, fmt.Errorf("%w: MultiPolygon arcs: %w", ErrTopology, err)
		}
		return mp, nil
	case "GeometryCollection":
		var out [][][]int
		for _, m := range g.Geometries {
			p, err := Polygons(m)
			if err != nil {
				return nil, err
			}
			out = append(out, p...)
		}
		return out, nil
	}
	return nil, nil
}

// Borders returns, in ascending order, the indices of the arcs that two
// different members of a GeometryCollection of polygons share: the borders
// between countries, without the coastlines (topojson-client's
// mesh(topology, object, (a, b) => a !== b)).
func Borders(g Geometry) ([]int, error) {
	if g.Type != "GeometryCollection" {
		return nil, fmt.Errorf("%w: borders need a GeometryCollection, not %q", ErrTopology, g.Type)
	}
	first := map[int]int{} // arc → the first member using it
	shared := map[int]bool{}
	for m, member := range g.Geometries {
		polys, err := Polygons(member)
		if err != nil {
			return nil, err
		}
		for _, poly := range polys {
			for _, ring := range poly {
				for _, i := range ring {
					if i < 0 {
						i = ^i
					}
					if f, ok := first[i]; !ok {
						first[i] = m
					} else if f != m {
						shared[i] = true
					}
				}
			}
		}
	}
	out := make([]int, 0, len(shared))
	for i := range shared {
		out = append(out, i)
	}
	slices.Sort(out)
	return out, nil
}
