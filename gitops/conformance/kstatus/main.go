// Command kstatus computes kstatus results of objects with kstatus' own code: status.Compute of
// sigs.k8s.io/cli-utils (the upstream library) and of github.com/fluxcd/cli-utils (the fork Flux's
// kustomize-controller links for its health checks; its generic status reader calls status.Compute).
//
// Input: JSON lines, one object each, on stdin.
// Output: one JSON line per input: {"upstream": {"status", "message"}, "flux": {"status", "message"}}; a
// result holds "error" instead when Compute returned one.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	fluxstatus "github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	upstream "sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message"`
	Error   string `json:"error,omitempty"`
}

type response struct {
	Upstream result `json:"upstream"`
	Flux     result `json:"flux"`
}

func main() {
	dec := json.NewDecoder(bufio.NewReader(os.Stdin))
	out := json.NewEncoder(os.Stdout)
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: bad input: %v\n", err)
			os.Exit(2)
		}
		var resp response
		// each library gets its own copy: the apiserver's JSON decoding (int64 for whole numbers), as a client sees it
		for _, lib := range []struct {
			res     *result
			compute func(*unstructured.Unstructured) (string, string, error)
		}{
			{&resp.Upstream, func(u *unstructured.Unstructured) (string, string, error) {
				r, err := upstream.Compute(u)
				if err != nil {
					return "", "", err
				}
				return string(r.Status), r.Message, nil
			}},
			{&resp.Flux, func(u *unstructured.Unstructured) (string, string, error) {
				r, err := fluxstatus.Compute(u)
				if err != nil {
					return "", "", err
				}
				return string(r.Status), r.Message, nil
			}},
		} {
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(raw); err != nil {
				lib.res.Error = fmt.Sprintf("object: %v", err)
				continue
			}
			status, message, err := lib.compute(u)
			if err != nil {
				lib.res.Error = err.Error()
				continue
			}
			lib.res.Status, lib.res.Message = status, message
		}
		if err := out.Encode(resp); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
			os.Exit(1)
		}
	}
}
