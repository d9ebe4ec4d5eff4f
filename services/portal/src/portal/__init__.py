"""The hub node's portal: patients and clinicians use the node in a browser, signed in through its Keycloak."""
