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

// RemoteOptions returns protoactor remote options for a node's actor
// system: gRPC windows and buffers sized for activation traffic, with the
// given transport credentials (nil: insecure, for plain TCP).
func RemoteOptions(dialCreds grpc.DialOption, serverCreds grpc.ServerOption) []remote.ConfigOption {
	if dialCreds == nil {
		dialCreds = grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	dial := []grpc.DialOption{dialCreds,
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithWriteBufferSize(ioBuffer), grpc.WithReadBufferSize(ioBuffer)}
	server := []grpc.ServerOption{
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		grpc.WriteBufferSize(ioBuffer), grpc.ReadBufferSize(ioBuffer)}
	if serverCreds != nil {
		server = append(server, serverCreds)
	}
	return []remote.ConfigOption{remote.WithDialOptions(dial...), remote.WithServerOptions(server...)}
}
