// Command example reads an event's ticketing settings through the generated Go client and prints
// the service's error reason when the call fails. It dials as every client of the service should
// (dial.go: keepalive, retries of unary calls, a bounded reconnection back-off). It is built and
// tested by scripts/check-generated, which proves the generated package compiles against
// Debian's Go gRPC libraries.
//
//	GRPC_GO_RETRY=on example -address 127.0.0.1:50051 -token "$TICKETING_GRPC_TOKEN" -event <event id>
//
// GRPC_GO_RETRY=on: grpc-go before 1.40 (Debian's is 1.33) retries nothing without it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	ticketingv1 "github.com/moim/ticketing/clients/go/moim/ticketing/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// errorDomain is the google.rpc.ErrorInfo domain of every error the service raises.
const errorDomain = "ticketing.moim.social"

func main() {
	address := flag.String("address", "127.0.0.1:50051", "the server's host:port (plain HTTP/2)")
	token := flag.String("token", "", "the server's TICKETING_GRPC_TOKEN, if it has one")
	eventID := flag.String("event", "", "the Moim event id")
	flag.Parse()
	if !retriesEnabled() {
		fmt.Fprintf(os.Stderr, "warning: grpc-go %s retries no call unless GRPC_GO_RETRY=on is set\n", grpc.Version)
	}
	if err := run(*address, *token, *eventID); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(address, token, eventID string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := dial(ctx, address)
	if err != nil {
		return fmt.Errorf("dial %s: %w", address, err)
	}
	defer conn.Close()
	if sent := sentToken(token); sent != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+sent)
	}
	client := ticketingv1.NewTicketingServiceClient(conn)
	response, err := client.GetTicketingSettings(ctx, &ticketingv1.GetTicketingSettingsRequest{EventId: eventID})
	if err != nil {
		return fmt.Errorf("GetTicketingSettings: %s (reason %q)", status.Code(err), reason(err))
	}
	settings := response.GetSettings()
	fmt.Printf("event %s: mode %s, %d tiers\n", settings.GetEventId(), settings.GetMode(), len(settings.GetTiers()))
	return nil
}

// sentToken returns the token a call sends: of a comma-separated list (the server's
// TICKETING_GRPC_TOKEN during a rotation, newest first) the first that is not blank, trimmed,
// as the Python and TypeScript clients and the webhook shim send it; "" sends none.
func sentToken(token string) string {
	for _, t := range strings.Split(token, ",") {
		if t = strings.TrimSpace(t); t != "" {
			return t
		}
	}
	return ""
}

// reason returns the service's ErrorInfo reason of a failed call, or "" when it has none.
func reason(err error) string {
	for _, detail := range status.Convert(err).Details() {
		if info, ok := detail.(*errdetails.ErrorInfo); ok && info.GetDomain() == errorDomain {
			return info.GetReason()
		}
	}
	return ""
}
