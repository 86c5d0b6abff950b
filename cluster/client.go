package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/conclave-ai/conclave/router"
)

// AdminClient calls a node's admin API. Base is "http://HOST:PORT"; HTTP
// nil means http.DefaultClient. Every call honours ctx.
type AdminClient struct {
	Base string
	HTTP *http.Client
	// Key, when set, is sent as the bearer admin key (see Config.AdminKeys).
	Key string
}

// APIError is an error answer from the admin API. It unwraps to the
// matching sentinels (ErrRejected, ErrNotLeader, ErrNoLeader, and the
// router's ErrUnknownNode, ErrUnknownSession, …), so errors.Is works across
// the wire.
type APIError struct {
	Status  int
	Type    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("admin api: %s (%d %s)", e.Message, e.Status, e.Type)
}

func (e *APIError) Unwrap() error {
	switch e.Type {
	case "unauthorized":
		return ErrUnauthorized
	case "rejected", "invalid_request":
		return ErrRejected
	case "not_leader":
		return ErrNotLeader
	case "unavailable":
		return ErrNoLeader
	case "unknown_node":
		return errors.Join(ErrRejected, router.ErrUnknownNode)
	case "unknown_session":
		return errors.Join(ErrRejected, router.ErrUnknownSession)
	case "unknown_replica":
		return errors.Join(ErrRejected, router.ErrUnknownReplica)
	case "no_active_node":
		return errors.Join(ErrRejected, router.ErrNoActiveNode)
	case "no_host":
		return errors.Join(ErrRejected, ErrNoHost)
	}
	return nil
}

// Status fetches GET /admin/v1/status.
func (c *AdminClient) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/admin/v1/status", nil, nil, &s)
}

// Nodes fetches GET /admin/v1/nodes.
func (c *AdminClient) Nodes(ctx context.Context) (NodesReply, error) {
	var r NodesReply
	return r, c.do(ctx, http.MethodGet, "/admin/v1/nodes", nil, nil, &r)
}

// Experts fetches GET /admin/v1/experts.
func (c *AdminClient) Experts(ctx context.Context) (ExpertsReply, error) {
	var r ExpertsReply
	return r, c.do(ctx, http.MethodGet, "/admin/v1/experts", nil, nil, &r)
}

// Map fetches GET /admin/v1/map.
func (c *AdminClient) Map(ctx context.Context) (*router.Map, error) {
	m := router.NewMap()
	return m, c.do(ctx, http.MethodGet, "/admin/v1/map", nil, nil, m)
}

// EpochReply is GET /admin/v1/epoch.
type EpochReply struct {
	Epoch uint64 `json:"epoch"`
}

// Epoch returns the leader's map epoch once the leader has applied
// everything committed (GET /admin/v1/epoch, relayed to the leader).
func (c *AdminClient) Epoch(ctx context.Context) (uint64, error) {
	var r EpochReply
	return r.Epoch, c.do(ctx, http.MethodGet, "/admin/v1/epoch", nil, nil, &r)
}

// AppliedEpoch asks the node at c for its own map's epoch once it is at
// least min (it answers a lower one when its wait runs out).
func (c *AdminClient) AppliedEpoch(ctx context.Context, min uint64) (uint64, error) {
	var r EpochReply
	return r.Epoch, c.do(ctx, http.MethodGet, "/admin/v1/epoch?applied="+strconv.FormatUint(min, 10), nil, nil, &r)
}

// Drain sets node draining (POST /admin/v1/drain/{node}); it does not wait
// for the node to empty.
func (c *AdminClient) Drain(ctx context.Context, node string) (DrainReply, error) {
	var r DrainReply
	return r, c.do(ctx, http.MethodPost, "/admin/v1/drain/"+node, nil, nil, &r)
}

// Rebalance runs placement with rebalancing on the leader.
func (c *AdminClient) Rebalance(ctx context.Context) (RebalanceReply, error) {
	var r RebalanceReply
	return r, c.do(ctx, http.MethodPost, "/admin/v1/rebalance", nil, nil, &r)
}

// Apply commits a command through the node (forwarded to the leader).
func (c *AdminClient) Apply(ctx context.Context, cmd router.Command) (ApplyReply, error) {
	b, err := cmd.Encode()
	if err != nil {
		return ApplyReply{}, err
	}
	var r ApplyReply
	return r, c.do(ctx, http.MethodPost, "/admin/v1/apply", b, nil, &r)
}

// applyForwarded sends an encoded command to the node believed to lead.
func (c *AdminClient) applyForwarded(ctx context.Context, b []byte) error {
	return c.do(ctx, http.MethodPost, "/admin/v1/apply", b, http.Header{forwardedHeader: {"1"}}, nil)
}

// leave asks the leader to remove node from Raft and the map.
func (c *AdminClient) leave(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/admin/v1/leave/"+node, nil, http.Header{forwardedHeader: {"1"}}, nil)
}

func (c *AdminClient) do(ctx context.Context, method, path string, body []byte, hdr http.Header, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Base, "/")+path, rd)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, path, out)
}

// send does req and decodes a 2xx JSON answer into out (nil: ignored) or
// the error body into an *APIError.
func (c *AdminClient) send(req *http.Request, path string, out any) error {
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	if c.Key != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var eb errorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error.Type != "" {
			return &APIError{Status: resp.StatusCode, Type: eb.Error.Type, Message: eb.Error.Message}
		}
		return &APIError{Status: resp.StatusCode, Type: "http", Message: strings.TrimSpace(string(b))}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("admin api: decode %s: %w", path, err)
	}
	return nil
}
