package main

import "testing"

func TestSentToken(t *testing.T) {
	cases := map[string]string{
		"s3cret":             "s3cret",
		" new-tok , old-tok": "new-tok",
		"":                   "",
		" ,old-tok":          "old-tok",
		" , ":                "",
	}
	for token, want := range cases {
		if got := sentToken(token); got != want {
			t.Errorf("sentToken(%q) = %q, want %q", token, got, want)
		}
	}
}
