//go:build tools

// Pins what toolchain.py builds: the provider's command (copied from the module cache at build
// time with its schema files) and the schema package its generate step runs against.
package tools

import (
	_ "github.com/pulumi/pulumi-kubernetes/provider/v4/cmd/pulumi-resource-kubernetes"
	_ "github.com/pulumi/pulumi/pkg/v3/codegen/schema"
)
