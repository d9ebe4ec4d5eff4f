#!/bin/sh
# Start Keycloak with its secrets read from files. Keycloak takes options only from its command line, its
# environment, keycloak.conf or a Java keystore, none of them from a file per option (keycloak/keycloak#10816),
# while hubnode hands every secret to a container as a file. So each KC_<NAME>_FILE variable names a file that
# is read into KC_<NAME> here, right before Keycloak starts: the secret never appears in the container's
# configuration (`docker inspect`), only in the environment of the Keycloak process itself.
set -eu

for variable in $(env | sed -n 's/^\(KC_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    eval "file=\"\${${variable}_FILE}\""
    value="$(cat "$file")"
    export "$variable=$value"
    unset "${variable}_FILE"
done

exec /opt/keycloak/bin/kc.sh "$@"
