// Command kstatus computes the status of objects with kstatus' own code and Flux's:
//   - "upstream": status.Compute of sigs.k8s.io/cli-utils (the upstream library);
//   - "flux": status.Compute of github.com/fluxcd/cli-utils, the fork Flux's kustomize-controller links (its
//     generic status reader calls it for a kind without healthCheckExprs);
//   - "fluxCEL" (only when the input has healthCheckExprs): Flux's CEL status reader for a Kustomization's
//     spec.healthCheckExprs (github.com/fluxcd/pkg/runtime/cel.NewStatusReader, as kustomize-controller registers
//     it with its status poller), read through ReadStatusForObject.
//
// Input: JSON lines {"object": {...}, "healthCheckExprs": [<spec.healthCheckExprs entries>]} on stdin.
// Output: one JSON line per input: {"upstream": R, "flux": R, "fluxCEL": R}, R = {"status", "message", "error"}.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/pkg/apis/kustomize"
	fluxcel "github.com/fluxcd/pkg/runtime/cel"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	upstream "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type request struct {
	Object           json.RawMessage               `json:"object"`
	HealthCheckExprs []kustomize.CustomHealthCheck `json:"healthCheckExprs"`
}

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type response struct {
	Upstream result  `json:"upstream"`
	Flux     result  `json:"flux"`
	FluxCEL  *result `json:"fluxCEL,omitempty"`
}

// object decodes a fresh copy for each library, the way a client decodes what the apiserver sends (int64 for
// whole numbers).
func object(raw json.RawMessage) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	return u, u.UnmarshalJSON(raw)
}

func compute(raw json.RawMessage, f func(*unstructured.Unstructured) (string, string, error)) result {
	u, err := object(raw)
	if err != nil {
		return result{Error: fmt.Sprintf("object: %v", err)}
	}
	status, message, err := f(u)
	if err != nil {
		return result{Error: err.Error()}
	}
	return result{Status: status, Message: message}
}

func fluxCEL(req request) *result {
	if len(req.HealthCheckExprs) == 0 {
		return nil
	}
	newReader, err := fluxcel.NewStatusReader(req.HealthCheckExprs)
	if err != nil {
		return &result{Error: fmt.Sprintf("healthCheckExprs: %v", err)}
	}
	u, err := object(req.Object)
	if err != nil {
		return &result{Error: fmt.Sprintf("object: %v", err)}
	}
	// the generic status reader needs neither the RESTMapper nor a cluster reader for an object in hand
	rs, err := newReader(nil).ReadStatusForObject(context.Background(), nil, u)
	if err != nil {
		return &result{Error: err.Error()}
	}
	out := &result{Status: string(rs.Status), Message: rs.Message}
	if rs.Error != nil {
		out.Error = rs.Error.Error()
	}
	return out
}

func main() {
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	out := json.NewEncoder(os.Stdout)
	for {
		var req request
		if err := dec.Decode(&req); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: bad input: %v\n", err)
			os.Exit(2)
		}
		resp := response{
			Upstream: compute(req.Object, func(u *unstructured.Unstructured) (string, string, error) {
				r, err := upstream.Compute(u)
				if err != nil {
					return "", "", err
				}
				return string(r.Status), r.Message, nil
			}),
			Flux: compute(req.Object, func(u *unstructured.Unstructured) (string, string, error) {
				r, err := fluxstatus.Compute(u)
				if err != nil {
					return "", "", err
				}
				return string(r.Status), r.Message, nil
			}),
			FluxCEL: fluxCEL(req),
		}
		if err := out.Encode(resp); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(1)
		}
	}
}
