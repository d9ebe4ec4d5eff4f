"""hubnode: declare, bring up and certify DigiHUB hub nodes.

`spec` turns stack config into validated objects, `plan` turns those into plain-data service
plans, and the adapters (`docker_node` for Pulumi, `local` for testcontainers) only translate plans.
"""
