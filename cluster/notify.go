package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/phonebook/phonebook"
	"github.com/phonebook/phonebook/proto/relaypb"
	"github.com/phonebook/phonebook/relay"
)

// Notify pushes f (a presence change, a "contact joined" event...) to the
// newest session of each recipient, wherever it is connected: local
// sessions directly, the others with one message per node. It is best
// effort like any Push: offline recipients are skipped (they ask for status
// at login) and it returns how many recipients were online. An error means
// the frame could not be encoded or ctx ended. Pushes that cannot be
// published because NATS is unreachable are not errors: they are what a
// partition costs (the node re-sends presence lists after it); they are
// counted (phonebook_cluster_forward_errors_total) and logged here, at most
// once a minute.
func (r *Router) Notify(ctx context.Context, to []phonebook.MSISDN, f *relaypb.Frame) (int, error) {
	if f == nil || f.Body == nil {
		return 0, phonebook.Errorf(phonebook.EInvalid, "notify: empty frame")
	}
	var fb []byte
	perNode := make(map[string][]phonebook.MSISDN)
	reached := 0
	for _, n := range to {
		switch ep := r.Locate(n).(type) {
		case nil:
		case *remoteEndpoint:
			perNode[ep.info.Node] = append(perNode[ep.info.Node], n)
		default:
			if ep.Push(f) {
				reached++
			}
		}
	}
	if len(perNode) == 0 {
		return reached, nil
	}
	fb, err := marshalFrame(f)
	if err != nil {
		return reached, fmt.Errorf("cluster: notify: %w", err)
	}
	var errs []error
	lost := 0
	for node, nums := range perNode {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		for len(nums) > 0 {
			part := nums[:min(len(nums), maxEnvelopeNumbers)]
			nums = nums[len(part):]
			env := envelope{numbers: part, frame: fb}
			if r.publish(r.cfg.SubjectPrefix+".node."+node+".push", &env) {
				reached += len(part)
			} else {
				lost += len(part)
			}
		}
	}
	if lost > 0 {
		r.logRate.warn(r.log, "notify", "cluster: pushes to other nodes lost: NATS unavailable", "recipients", lost)
	}
	return reached, errors.Join(errs...)
}

// Notify pushes f to the newest session of each recipient through any
// relay.Router: a cluster Router batches per node, the single-node
// LocalRouter pushes directly. It returns how many recipients were online.
func Notify(ctx context.Context, router relay.Router, to []phonebook.MSISDN, f *relaypb.Frame) (int, error) {
	if cr, ok := router.(*Router); ok {
		return cr.Notify(ctx, to, f)
	}
	if f == nil || f.Body == nil {
		return 0, phonebook.Errorf(phonebook.EInvalid, "notify: empty frame")
	}
	reached := 0
	for _, n := range to {
		if err := ctx.Err(); err != nil {
			return reached, err
		}
		if ep := router.Locate(n); ep != nil && ep.Push(f) {
			reached++
		}
	}
	return reached, nil
}
