"""The local cluster's certificates: one CA, a serving certificate for the API, a client certificate per component.

Pure (the time is an argument), so tests check the names and usages Kubernetes authorises by without a
cluster. Kubernetes takes a client's user from the certificate's CN and its groups from O; the names
below are the ones its built-in RBAC roles are bound to.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from infra.pki import CA_VALIDITY, certificate_builder, certificate_pem, general_name, key_pem

#: The cluster's one node; the kubelet refuses a loopback IP, so the node is reached by this name.
NODE_NAME = "localhost"
#: The API's names: loopback for the host, the first Service address and the in-cluster names for pods.
API_NAMES = (
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class Client:
    """A client certificate: the file stem it is written to, its user (CN) and groups (O)."""

    stem: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = Client("admin", "hubnode-admin", ("system:masters",))
CONTROLLER_MANAGER = Client("kube-controller-manager", "system:kube-controller-manager")
SCHEDULER = Client("kube-scheduler", "system:kube-scheduler")
PROXY = Client("kube-proxy", "system:kube-proxy")
KUBELET = Client("kubelet", f"system:node:{NODE_NAME}", ("system:nodes",))
#: The API server's identity towards the kubelet (logs, exec): admitted by the kubelet's webhook authorisation.
APISERVER_KUBELET = Client("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",))
CLIENTS = (ADMIN, CONTROLLER_MANAGER, SCHEDULER, PROXY, KUBELET, APISERVER_KUBELET)


def api_service_ip(service_range: str) -> str:
    """The API's ClusterIP: the first address of the Service range, which the apiserver claims itself."""
    return str(next(ipaddress.IPv4Network(service_range).hosts()))


def issue_all(service_range: str, now: datetime) -> dict[str, bytes]:
    """Every file of the cluster's PKI folder (file name -> PEM), issued by a new CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hubnode local cluster CA")])
    ca = (
        certificate_builder(ca_name, ca_name, ca_key.public_key(), now, CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca.crt": certificate_pem(ca), "ca.key": key_pem(ca_key)}

    def issue(stem: str, subject: x509.Name, usage: x509.ObjectIdentifier, names: tuple[str, ...] = ()) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            certificate_builder(subject, ca.subject, key.public_key(), now, CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([general_name(n) for n in names]), critical=False
            )
        files[f"{stem}.crt"] = certificate_pem(builder.sign(ca_key, hashes.SHA256()))
        files[f"{stem}.key"] = key_pem(key)

    api_names = (*API_NAMES, api_service_ip(service_range))
    issue("apiserver", _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, api_names)
    for client in CLIENTS:
        issue(client.stem, _name(client.user, client.groups), ExtendedKeyUsageOID.CLIENT_AUTH)
    signer = ec.generate_private_key(ec.SECP256R1())
    files["sa.key"] = key_pem(signer)
    files["sa.pub"] = signer.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return files


def _name(user: str, groups: tuple[str, ...] = ()) -> x509.Name:
    return x509.Name(
        [
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups),
            x509.NameAttribute(NameOID.COMMON_NAME, user),
        ]
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
