package atlas_test

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/anyscope/anyscope/analysis/atlas"
)

// Two results of the built-in K-root measurement, as the daily dumps hold
// them (one JSON object per line), with a broken line between them.
func ExampleParser() {
	in := strings.NewReader(`{"type":"dns","msm_id":10301,"prb_id":6036,"timestamp":1442845198,"fw":4700,"proto":"UDP","dst_addr":"193.0.14.129","result":{"rt":1.347,"size":79,"answers":[{"TYPE":"TXT","NAME":"hostname.bind","RDATA":"ns1.fi-hel.k.ripe.net"}]}}
{"type":"dns","msm_id":10301,
{"type":"dns","msm_id":10301,"prb_id":11180,"timestamp":1443691516,"proto":"UDP","dst_addr":"193.0.14.129","error":{"timeout":5000}}
`)
	p, err := atlas.NewParser(in, atlas.Options{})
	if err != nil {
		panic(err)
	}
	for {
		rec, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, atlas.ErrMalformed) {
			fmt.Println(err)
			continue
		}
		if err != nil {
			panic(err)
		}
		for _, r := range rec.Results {
			identity := ""
			if r.DNS != nil {
				identity = r.DNS.Identity
			}
			fmt.Printf("%s %s %s %s rtt=%dus failure=%q identity=%q\n",
				atlas.VantagePointName(rec.ProbeID), atlas.TargetName(&rec), r.Address, r.Query, r.RTTMicros, r.Failure, identity)
		}
	}
	fmt.Printf("%+v\n", p.Stats())
	// Output:
	// atlas-6036 atlas-10301 193.0.14.129 hostname.bind rtt=1347us failure="" identity="ns1.fi-hel.k.ripe.net"
	// atlas: record 1 (line 2, byte 231): invalid JSON at byte 29 of the record: unexpected end of JSON input
	// atlas-11180 atlas-10301 193.0.14.129 hostname.bind rtt=0us failure="generic_timeout_error" identity=""
	// {Records:3 Bytes:394}
}
