package expert

import (
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Flow-control windows of the gRPC connections that carry expert calls.
// gRPC's 64 KiB defaults make a layer's worth of activations (tens to
// hundreds of KiB each way at batch 16) wait for window updates, a round
// trip each; these windows hold several layers in flight.
const (
	streamWindow = 8 << 20
	connWindow   = 32 << 20
	ioBuffer     = 256 << 10
)

// maxMessage bounds one gRPC message between nodes. gRPC receives at most
// 4 MiB by default, and a message past that never arrives: the call times
// out and the stream it tore down loses whatever else was in flight. One
// expert call may carry up to maxPayloadFloats float32s (a prefill chunk of
// a large model: 256 rows of a 4096-wide model are already 4 MiB), and the
// remote packs several envelopes into one message, so the bound is well
// above that.
const maxMessage = 1 << 30

// RemoteOptions returns protoactor remote options for a node's actor
// system: gRPC windows and buffers sized for activation traffic, with the
// given transport credentials (nil: insecure, for plain TCP).
func RemoteOptions(dialCreds grpc.DialOption, serverCreds grpc.ServerOption) []remote.ConfigOption {
	if dialCreds == nil {
		dialCreds = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	dial := []grpc.DialOption{dialCreds,
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithWriteBufferSize(ioBuffer), grpc.WithReadBufferSize(ioBuffer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage))}
	server := []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		grpc.WriteBufferSize(ioBuffer), grpc.ReadBufferSize(ioBuffer),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage)}
	if serverCreds != nil {
		server = append(server, serverCreds)
	}
	return []remote.ConfigOption{remote.WithDialOptions(dial...), remote.WithServerOptions(server...)}
}
