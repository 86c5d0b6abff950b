package cluster

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/conclave-ai/conclave/actors/expert"
	"github.com/conclave-ai/conclave/router"
)

// Fault injection on the admin API (only with Config.FaultInjection):
//
//	GET    /admin/v1/fault   FaultsReply: the delays in force on this node
//	POST   /admin/v1/fault   body FaultRequest: set (delay_ms > 0) or clear (0) one expert's delay
//	DELETE /admin/v1/fault   clear every fault on this node

// FaultRequest is POST /admin/v1/fault: expert's actor on this node sleeps
// DelayMS milliseconds before computing each request (0 clears it).
type FaultRequest struct {
	Expert  router.ExpertID `json:"expert"`
	DelayMS int64           `json:"delay_ms"`
}

// FaultsReply is the answer of every /admin/v1/fault call.
type FaultsReply struct {
	Node   string         `json:"node"`
	Faults []FaultRequest `json:"faults"`
}

func (x *Experts) registerFaults(f *expert.Faults) {
	reply := func(w http.ResponseWriter) {
		r := FaultsReply{Node: x.n.cfg.ID, Faults: []FaultRequest{}}
		for id, d := range f.Delays() {
			r.Faults = append(r.Faults, FaultRequest{Expert: id, DelayMS: d.Milliseconds()})
		}
		slices.SortFunc(r.Faults, func(a, b FaultRequest) int {
			return cmp.Or(cmp.Compare(a.Expert.Layer, b.Expert.Layer), cmp.Compare(a.Expert.Index, b.Expert.Index))
		})
		writeJSON(w, http.StatusOK, r)
	}
	x.n.mux.HandleFunc("GET /admin/v1/fault", func(w http.ResponseWriter, r *http.Request) { reply(w) })
	x.n.mux.HandleFunc("DELETE /admin/v1/fault", func(w http.ResponseWriter, r *http.Request) {
		f.Clear()
		x.n.log.Warn("fault injection: cleared every fault")
		reply(w)
	})
	x.n.mux.HandleFunc("POST /admin/v1/fault", func(w http.ResponseWriter, r *http.Request) {
		var req FaultRequest
		dec := json.NewDecoder(io.LimitReader(r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, fmt.Errorf("%w: fault: %v", errBadRequest, err))
			return
		}
		if m := x.w; req.Expert.Layer < 0 || req.Expert.Layer >= m.Layers || req.Expert.Index < 0 || req.Expert.Index >= m.Experts {
			writeError(w, fmt.Errorf("%w: fault: no expert %v in a model of %d layers × %d experts", errBadRequest, req.Expert, m.Layers, m.Experts))
			return
		}
		if req.DelayMS < 0 || req.DelayMS > expert.MaxFaultDelay.Milliseconds() {
			writeError(w, fmt.Errorf("%w: fault: delay_ms %d not in [0, %d]", errBadRequest, req.DelayMS, expert.MaxFaultDelay.Milliseconds()))
			return
		}
		if err := f.Set(req.Expert, time.Duration(req.DelayMS)*time.Millisecond); err != nil {
			writeError(w, fmt.Errorf("%w: %v", errBadRequest, err))
			return
		}
		x.n.log.Warn("fault injection: expert delay set", "expert", req.Expert, "delay_ms", req.DelayMS)
		reply(w)
	})
}
