package main

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"time"

	ticketingv1 "github.com/moim/ticketing/clients/go/moim/ticketing/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"
)

// serviceName is the full name of the service whose unary methods are retried.
const serviceName = "moim.ticketing.v1.TicketingService"

// keepaliveParams ping the server while calls are open and end the connection, and its calls
// with UNAVAILABLE, when a ping goes unanswered: a quiet WatchRegistrationEvents stream to a server
// whose machine hung or vanished otherwise waits forever. The server answers pings at any rate;
// a hung server is noticed within Time + Timeout.
var keepaliveParams = keepalive.ClientParameters{
	Time:                15 * time.Second,
	Timeout:             10 * time.Second,
	PermitWithoutStream: false, // without a call open, no wait can hang on a dead server
}

// connectParams bound the wait between reconnection attempts. gRPC's default grows to 120 s, so
// a client kept failing for up to two minutes after a restarted server was back; 3 s at most
// costs a failed dial every 3 s while the server is away.
var connectParams = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  200 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   3 * time.Second,
	},
	MinConnectTimeout: 20 * time.Second,
}

// retryPolicy is the service config's retryPolicy of every unary method. Every RPC of the
// service is safe to retry (a repeat answers from what is stored). UNAVAILABLE: the server, or
// the way to it, was away, or it refused the stream before running the call. RESOURCE_EXHAUSTED:
// the server was running as many calls as it takes (reason SERVER_BUSY, nothing of the call ran).
// CANCELLED: a server flooded with streams cancelled calls it had not run (the caller's own
// cancellation ends its context, and no retry outlives that). A channel policy cannot read the ErrorInfo reason, so a call refused RESOURCE_EXHAUSTED for
// another cause (a message over the size limit) is tried again too: at most maxAttempts times,
// seconds in all, and the same error comes back. No retryThrottling: a cold burst against a
// small call limit fails most first attempts at once, and the throttle would then stop every
// retry. The stream is never retried: a feed consumer resumes after the last sequence it applied.
type retryPolicy struct {
	MaxAttempts          int      `json:"maxAttempts"`
	InitialBackoff       string   `json:"initialBackoff"`
	MaxBackoff           string   `json:"maxBackoff"`
	BackoffMultiplier    float64  `json:"backoffMultiplier"`
	RetryableStatusCodes []string `json:"retryableStatusCodes"`
}

var unaryRetryPolicy = retryPolicy{
	MaxAttempts:          5,
	InitialBackoff:       "0.1s",
	MaxBackoff:           "2s",
	BackoffMultiplier:    2,
	RetryableStatusCodes: []string{"UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"},
}

type methodName struct {
	Service string `json:"service"`
	Method  string `json:"method"`
}

type methodConfig struct {
	Name        []methodName `json:"name"`
	RetryPolicy retryPolicy  `json:"retryPolicy"`
}

// serviceConfig is the default service config: the retry policy on each unary method of the
// service, read from its descriptor so that a method added to the protos is covered and the
// server stream never is.
func serviceConfig() string {
	var names []methodName
	methods := ticketingv1.File_moim_ticketing_v1_ticketing_service_proto.Services().
		ByName("TicketingService").Methods()
	for i := 0; i < methods.Len(); i++ {
		method := methods.Get(i)
		if !method.IsStreamingClient() && !method.IsStreamingServer() {
			names = append(names, methodName{serviceName, string(method.Name())})
		}
	}
	config := map[string][]methodConfig{"methodConfig": {{names, unaryRetryPolicy}}}
	encoded, err := json.Marshal(config)
	if err != nil {
		panic(err) // plain structs of strings and numbers always encode
	}
	return string(encoded)
}

// dialOptions are the options every client of the service should dial with: keepalive,
// retries of unary calls and a bounded reconnection back-off. Plaintext: append transport
// credentials (grpc.WithTransportCredentials) instead of WithInsecure for TLS.
func dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithKeepaliveParams(keepaliveParams),
		grpc.WithDefaultServiceConfig(serviceConfig()),
		grpc.WithConnectParams(connectParams),
	}
}

// dial opens a plaintext connection to the server at `address` with dialOptions(). It does not
// wait for the connection: the first call does.
func dial(ctx context.Context, address string) (*grpc.ClientConn, error) {
	// grpc-go 1.33 (Debian) predates credentials/insecure; WithInsecure is its plaintext option.
	return grpc.DialContext(ctx, address, append(dialOptions(), grpc.WithInsecure())...)
}

// retriesEnabled tells whether this grpc-go applies a service config's retryPolicy: from 1.40 on
// it does unless GRPC_GO_RETRY=off; before, only with GRPC_GO_RETRY=on (read when the process
// starts, so it must be set in the environment, not by the program).
func retriesEnabled() bool {
	setting := os.Getenv("GRPC_GO_RETRY")
	if versionAtLeast(grpc.Version, 1, 40) {
		return !strings.EqualFold(setting, "off")
	}
	return strings.EqualFold(setting, "on")
}

// versionAtLeast compares a "major.minor.patch[-suffix]" version with major.minor.
func versionAtLeast(version string, major, minor int) bool {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return false
	}
	gotMajor, errMajor := strconv.Atoi(parts[0])
	gotMinor, errMinor := strconv.Atoi(parts[1])
	if errMajor != nil || errMinor != nil {
		return false
	}
	return gotMajor > major || (gotMajor == major && gotMinor >= minor)
}
