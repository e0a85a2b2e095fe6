package testenv

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// DiffMaps lists, in key order, the keys whose values differ between got
// and want (a key missing on one side shows as the zero value), each as
// "  key:\n    <gotName> v\n    <wantName> v\n"; empty when equal.
func DiffMaps[V any](got, want map[string]V, gotName, wantName string) string {
	keys := make([]string, 0, len(got)+len(want))
	for k := range got {
		keys = append(keys, k)
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	w := max(len(gotName), len(wantName))
	var b strings.Builder
	for _, k := range keys {
		g, x := got[k], want[k]
		if !reflect.DeepEqual(g, x) {
			fmt.Fprintf(&b, "  %s:\n    %-*s %v\n    %-*s %v\n", k, w, gotName, g, w, wantName, x)
		}
	}
	return b.String()
}
