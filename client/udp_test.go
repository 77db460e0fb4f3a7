package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/phonebook/phonebook/client"
	"github.com/phonebook/phonebook/relay"
)

func startUDPRelay(t *testing.T) (*relay.Server, string, string) {
	t.Helper()
	srv, tcpAddr := newRelay(t)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.ServeUDP(pc, relay.UDPConfig{})
	return srv, tcpAddr, pc.LocalAddr().String()
}

func dialUDP(t *testing.T, addr, token string, o client.Options) *client.Client {
	t.Helper()
	o.Token, o.DeviceID = token, users[token][1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.DialUDP(ctx, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestUDPClient(t *testing.T) {
	srv, tcpAddr, udpAddr := startUDPRelay(t)
	a := dialUDP(t, udpAddr, "tok-a", client.Options{})
	b := dialUDP(t, udpAddr, "tok-b", client.Options{})
	if a.Number != "+8613800138000" || a.Heartbeat != 20*time.Second {
		t.Fatalf("AuthOK: %s %s", a.Number, a.Heartbeat)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	p, err := a.Send("13900139000", "hi")
	if err != nil {
		t.Fatal(err)
	}
	d := <-b.Deliveries()
	// Without AutoAck nothing is DELIVERED until the application says so.
	select {
	case <-p.Done():
		t.Fatal("SendResult before the recipient's ack")
	case <-time.After(50 * time.Millisecond):
	}
	if err := b.Ack(d.ServerMsgId); err != nil {
		t.Fatal(err)
	}
	if r, err := p.Wait(ctx); err != nil || r.State.String() != "DELIVERED" {
		t.Fatalf("result %v %v", r, err)
	}

	// Close tells the server at once (the idle timeout is 45 s).
	b.Close()
	for len(srv.Connections()) != 1 {
		if ctx.Err() != nil {
			t.Fatal("the server kept the closed UDP session")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := b.Send("+8613800138000", "closed"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("send after Close: %v", err)
	}

	tc := dial(t, tcpAddr, "tok-b", client.Options{})
	if err := tc.Rebind(); err == nil {
		t.Fatal("Rebind of a TCP client")
	}
}

func TestUDPDialNoServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close() // nobody answers there
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := client.DialUDP(ctx, addr, client.Options{Token: "tok-a"}); err == nil {
		t.Fatal("dialled a closed port")
	}
}
