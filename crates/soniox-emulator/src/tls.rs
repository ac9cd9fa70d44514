//! Test TLS identities for the emulator's `wss://` mode: a throw-away CA and
//! a leaf certificate it signs for `localhost` and `127.0.0.1`, made with
//! rcgen (ring-based). The tests of sttpipe's own TLS paths use them too.

use crate::TlsIdentity;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A fresh CA and a server identity it signed, valid for the names
/// `localhost` and `127.0.0.1`. Returns the CA certificate as PEM (for the
/// client to trust, e.g. via `--ca-file`) and the identity to put in
/// `EmulatorConfig::tls`. Every call makes new keys, so two calls give two
/// CAs that do not trust each other.
pub fn test_identity() -> (String, TlsIdentity) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("no names to parse");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "sttpipe test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("generate CA key");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign CA");

    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("valid subject alt names");
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().expect("generate leaf key");
    let leaf = leaf_params
        .signed_by(&leaf_key, &ca)
        .expect("sign leaf certificate");

    (
        ca.pem(),
        TlsIdentity {
            cert_chain_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        },
    )
}
