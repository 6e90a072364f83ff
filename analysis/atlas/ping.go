package atlas

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

type pingRecord struct {
	DstAddr string      `json:"dst_addr"`
	DstName string      `json:"dst_name"`
	Sent    *int64      `json:"sent"`
	Rcvd    *int64      `json:"rcvd"`
	Min     *float64    `json:"min"`
	Avg     *float64    `json:"avg"`
	Max     *float64    `json:"max"`
	TTL     *int64      `json:"ttl"`
	Result  []pingReply `json:"result"`
}

type pingReply struct {
	RTT   *float64        `json:"rtt"`
	X     string          `json:"x"`
	Dup   json.RawMessage `json:"dup"`
	Late  json.RawMessage `json:"late"`
	Error json.RawMessage `json:"error"`
}

func (c *converter) ping(data []byte) error {
	var p pingRecord
	if err := json.Unmarshal(data, &p); err != nil {
		return jsonError(err)
	}
	dst, ok, err := destination(p.DstAddr, p.DstName, "", "")
	if err != nil {
		return err
	}
	if !ok {
		if p.Rcvd != nil && *p.Rcvd > 0 {
			return errors.New("no dst_addr")
		}
		c.skip(SkipNoAddress)
		return nil
	}
	if p.Sent == nil || p.Rcvd == nil {
		return errors.New("ping without sent or rcvd")
	}
	if *p.Sent < 0 || *p.Sent > 10000 || *p.Rcvd < 0 {
		return fmt.Errorf("ping sent %d rcvd %d out of range", *p.Sent, *p.Rcvd)
	}
	v := &api.PingValues{Sent: int(*p.Sent), Received: int(min(*p.Rcvd, *p.Sent))}
	if p.TTL != nil {
		if *p.TTL < 0 || *p.TTL > 255 {
			return fmt.Errorf("ttl %d out of range", *p.TTL)
		}
		v.ReplyTTL = int(*p.TTL)
	}
	res := api.Result{
		MeasuredAt: c.rec.Time, Address: dst.String(),
		Kind: api.KindPing, Transport: api.TransportICMP, Query: api.QueryEcho, Ping: v,
	}
	var rtts []float64 // ms, of the replies that count (no duplicates)
	errText := ""
	for _, r := range p.Result {
		switch {
		case present(r.Error):
			var s string
			if json.Unmarshal(r.Error, &s) == nil && errText == "" {
				errText = s
			}
		case present(r.Dup) || present(r.Late) || r.X == "*" || r.RTT == nil:
		default:
			if _, err := ms("rtt", *r.RTT); err != nil {
				return err
			}
			rtts = append(rtts, *r.RTT)
		}
	}
	if v.Received == 0 {
		res.Failure = api.FailureTimeout
		if f := textFailure(errText); errText != "" && f != api.FailureUnknown {
			res.Failure = f
		}
		c.add(res, 0)
		return nil
	}
	for _, f := range []struct {
		name string
		v    *float64
		us   *int64
	}{{"min", p.Min, &v.MinUS}, {"avg", p.Avg, &v.AvgUS}, {"max", p.Max, &v.MaxUS}} {
		if f.v == nil {
			return fmt.Errorf("ping received %d replies but has no %s", v.Received, f.name)
		}
		if *f.us, err = ms(f.name, *f.v); err != nil {
			return err
		}
	}
	if n := len(rtts); n > 0 {
		var sum, sq float64
		for _, r := range rtts {
			sum += r
		}
		mean := sum / float64(n)
		for _, r := range rtts {
			sq += (r - mean) * (r - mean)
		}
		if v.StddevUS, err = ms("stddev", math.Sqrt(sq/float64(n))); err != nil {
			return err
		}
	}
	res.RTTMicros = v.AvgUS
	c.add(res, 0)
	return nil
}
