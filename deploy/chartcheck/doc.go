// Package chartcheck holds the tests that lint, render and strictly decode the
// amibus Helm chart. It is its own module so that Helm and Kubernetes
// dependencies stay out of the main amibus module.
package chartcheck
