"""What `pulumi up` runs (Pulumi.yaml's `main: infra/`): the program of `infra.program`."""

from infra.program import declare_stack

declare_stack()
