package main

import (
	"context"
	"encoding/json"
	"testing"
)

func TestServiceConfigRetriesEveryUnaryMethodAndNeverTheStream(t *testing.T) {
	var config struct {
		MethodConfig []struct {
			Name []methodName
		}
	}
	if err := json.Unmarshal([]byte(serviceConfig()), &config); err != nil {
		t.Fatalf("the service config is not JSON: %v", err)
	}
	retried := map[string]bool{}
	for _, name := range config.MethodConfig[0].Name {
		if name.Service != serviceName {
			t.Errorf("a method of another service is configured: %+v", name)
		}
		retried[name.Method] = true
	}
	for _, method := range []string{"GetTicketingSettings", "StartPaidRegistration", "ConfirmPayment", "ListRegistrationEvents"} {
		if !retried[method] {
			t.Errorf("%s is not retried; retried: %v", method, retried)
		}
	}
	if retried["WatchRegistrationEvents"] {
		t.Error("the server stream is retried; a feed consumer resumes after its last sequence instead")
	}
}

func TestDialAcceptsTheOptions(t *testing.T) {
	// grpc-go refuses an invalid default service config when dialing; no connection is made.
	conn, err := dial(context.Background(), "127.0.0.1:1")
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.Close()
}

func TestVersionAtLeast(t *testing.T) {
	cases := map[string]bool{"1.33.3": false, "1.40.0": true, "1.62.1-dev": true, "2.0.0": true, "x": false}
	for version, want := range cases {
		if got := versionAtLeast(version, 1, 40); got != want {
			t.Errorf("versionAtLeast(%q, 1, 40) = %v, want %v", version, got, want)
		}
	}
}
