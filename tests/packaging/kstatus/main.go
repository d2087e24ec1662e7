// kstatus-check computes the kstatus status (what Flux's health checks use) of each object given as one JSON
// document per line on stdin and prints "<status>\t<message>" per line. Used by tests/packaging/check.sh to
// show that IngestJob statuses, as the operator writes them, read as Flux expects without configuration.
package main

import (
	"bufio"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 16<<20)
	for in.Scan() {
		// UnmarshalJSON keeps integers as int64, as objects read from the API server have them.
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(in.Bytes()); err != nil {
			fmt.Fprintf(os.Stderr, "kstatus-check: line is not a Kubernetes object: %v\n", err)
			os.Exit(2)
		}
		res, err := status.Compute(obj)
		if err != nil {
			fmt.Fprintf(os.Stderr, "kstatus-check: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("%s\t%s\n", res.Status, res.Message)
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "kstatus-check: reading stdin: %v\n", err)
		os.Exit(2)
	}
}
