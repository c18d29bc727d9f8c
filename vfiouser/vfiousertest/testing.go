package vfiousertest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/myriemu/myriemu/vfiouser"
)

// Serve runs srv until the test ends. Then it closes srv and waits for
// Serve to return: an error from Close, or a Serve that ends other than
// with vfiouser.ErrServerClosed, fails the test.
func Serve(tb testing.TB, srv *vfiouser.Server) {
	tb.Helper()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	tb.Cleanup(func() {
		if err := srv.Close(); err != nil {
			tb.Errorf("vfio-user server %s: Close: %v", srv.Path(), err)
		}
		if err := <-served; !errors.Is(err, vfiouser.ErrServerClosed) {
			tb.Errorf("vfio-user server %s: Serve returned %v, want ErrServerClosed", srv.Path(), err)
		}
	})
}

// Connect dials the server at path, waiting up to 10 s for it to accept.
// The client is closed when the test ends; a protocol violation it saw
// fails the test.
func Connect(tb testing.TB, path string) *Client {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Close(); err != nil {
			tb.Errorf("client saw protocol violations: %v", err)
		}
	})
	return c
}

// Negotiated is Connect followed by Negotiate.
func Negotiated(tb testing.TB, path string) *Client {
	tb.Helper()
	c := Connect(tb, path)
	if err := c.Negotiate(); err != nil {
		tb.Fatal(err)
	}
	return c
}
